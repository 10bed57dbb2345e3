"""TLS certificates and SuperNode keys: the files Flower's SuperLink and SuperNodes read."""

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key
from cryptography.hazmat.primitives.serialization.ssh import load_ssh_public_key
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.core.errors import ConfigError
from fedtumor.security.certs import make_superlink_certificates, read_certificate, subject_alternative_names
from fedtumor.security.node_keys import make_node_key


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_server_certificate_is_signed_by_the_ca_for_every_name(tmp_path):
    files = make_superlink_certificates(tmp_path, ["superlink.example.org", "localhost"], ["127.0.0.1", "::1"])
    ca, server = read_certificate(files.ca_cert), read_certificate(files.server_cert)
    server.verify_directly_issued_by(ca)  # raises when the signature or issuer is wrong
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = subject_alternative_names(server)
    assert names == ["superlink.example.org", "localhost", "127.0.0.1", "::1"]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    # The private key belongs to the certificate, and only its owner can read it.
    key = load_pem_private_key(files.server_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()
    assert mode(files.server_key) == 0o600 and mode(files.ca_key) == 0o600
    assert mode(files.server_cert) & 0o044  # certificates are public


def test_existing_certificates_are_never_replaced_silently(tmp_path):
    first = make_superlink_certificates(tmp_path, ["localhost"])
    before = first.ca_cert.read_bytes()
    with pytest.raises(ConfigError, match="ca.crt already exists"):
        make_superlink_certificates(tmp_path, ["localhost"])
    assert first.ca_cert.read_bytes() == before
    replaced = make_superlink_certificates(tmp_path, ["localhost"], overwrite=True)
    assert replaced.ca_cert.read_bytes() != before


@pytest.mark.parametrize(
    ("hosts", "ips", "message"),
    [
        ([], [], "at least one --host or --ip"),
        (["bad host"], [], "--host 'bad host'"),
        (["localhost"], ["300.1.1.1"], "--ip '300.1.1.1'"),
    ],
)
def test_bad_names_are_rejected_before_anything_is_written(tmp_path, hosts, ips, message):
    with pytest.raises(ConfigError, match=message):
        make_superlink_certificates(tmp_path / "certs", hosts, ips)
    assert not (tmp_path / "certs").exists()


def test_malformed_certificate_is_named(tmp_path):
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=f"certificate {bad}: not a PEM certificate"):
        read_certificate(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_certificate(tmp_path / "missing.crt")


def test_node_key_pair_is_what_flower_reads(tmp_path):
    files = make_node_key(tmp_path, "site-a")
    private = load_ssh_private_key(files.private_key.read_bytes(), password=None)
    public = load_ssh_public_key(files.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
    assert private.public_key().public_numbers() == public.public_numbers()
    assert mode(files.private_key) == 0o600
    with pytest.raises(ConfigError, match="site-a.key already exists"):
        make_node_key(tmp_path, "site-a")
    with pytest.raises(ConfigError, match="--name"):
        make_node_key(tmp_path, "../escape")


def test_cli_certs_and_node_key(tmp_path):
    runner = CliRunner()
    made = runner.invoke(app, ["certs", "--out", str(tmp_path / "certs"), "--host", "localhost", "--ip", "127.0.0.1"])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "certs" / "server.pem").exists()
    again = runner.invoke(app, ["certs", "--out", str(tmp_path / "certs"), "--host", "localhost"])
    assert again.exit_code == 2 and "already exists" in again.output
    key = runner.invoke(app, ["node-key", "--name", "site-b", "--out", str(tmp_path / "keys")])
    assert key.exit_code == 0, key.output
    assert (tmp_path / "keys" / "site-b.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
