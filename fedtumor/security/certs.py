"""TLS certificates for a SuperLink: a private CA and a server certificate it signs.

The coordinating centre runs :func:`make_superlink_certificates` once; it keeps ``ca.key``
private, gives the SuperLink ``server.pem`` + ``server.key``, and hands ``ca.crt`` to every
hospital (``flower-supernode --root-certificates ca.crt``) and to whoever submits runs
(``root-certificates`` in Flower's ``config.toml``). Made with the ``cryptography`` library,
no openssl: ECDSA P-384 keys, SHA-256 signatures, subject alternative names for every host
name and IP address the SuperLink is reached by (TLS checks the SAN, not the common name).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedtumor.core.errors import ConfigError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
PRIVATE_KEY_MODE = 0o600  # owner read/write only
_HOST_NAME = re.compile(r"^(?=.{1,253}$)(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})*$")


@dataclass(frozen=True)
class CertificateFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _check_hosts(hosts: list[str], ips: list[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Validate the SAN entries up front; return the parsed IP addresses."""
    if not hosts and not ips:
        raise ConfigError("certs: give at least one --host or --ip the SuperLink is reached by")
    for host in hosts:
        if not _HOST_NAME.match(host):
            raise ConfigError(f"certs: --host {host!r} is not a valid DNS name")
    parsed = []
    for ip in ips:
        try:
            parsed.append(ipaddress.ip_address(ip))
        except ValueError:
            raise ConfigError(f"certs: --ip {ip!r} is not an IPv4 or IPv6 address") from None
    return parsed


def write_private_key(path: Path, data: bytes) -> None:
    """Create a private key file that is never readable by others, not even for an instant."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _prepare_out_dir(out_dir: Path, names: list[str], overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"certs: output {out_dir} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"certs: cannot create {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise ConfigError(f"certs: output folder {out_dir} is not writable")
    existing = [name for name in names if (out_dir / name).exists()]
    if existing and not overwrite:
        # Replacing a CA silently would lock every registered hospital out.
        raise ConfigError(f"certs: {out_dir / existing[0]} already exists (pass --force to replace it)")
    for name in existing:
        (out_dir / name).unlink()


def make_superlink_certificates(
    out_dir: Path | str,
    hosts: list[str],
    ips: list[str] = (),
    valid_days: int = 365,
    overwrite: bool = False,
) -> CertificateFiles:
    """Write ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` into ``out_dir``."""
    hosts, ips = list(hosts), list(ips)
    ip_addresses = _check_hosts(hosts, ips)
    if valid_days < 1:
        raise ConfigError(f"certs: --days must be at least 1, got {valid_days}")
    out_dir = Path(out_dir).expanduser()
    files = CertificateFiles(out_dir / CA_CERT, out_dir / CA_KEY, out_dir / SERVER_CERT, out_dir / SERVER_KEY)
    _prepare_out_dir(out_dir, [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY], overwrite)

    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)  # tolerate small clock skew between machines
    not_after = now + datetime.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedtumor"),
            x509.NameAttribute(NameOID.COMMON_NAME, "fedtumor CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    alt_names = [x509.DNSName(host) for host in hosts] + [x509.IPAddress(ip) for ip in ip_addresses]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (hosts or ips)[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    write_private_key(files.ca_key, _pem_key(ca_key))
    write_private_key(files.server_key, _pem_key(server_key))
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return files


def read_certificate(path: Path | str) -> x509.Certificate:
    """Load a PEM certificate; a missing or malformed file is a one-line ConfigError naming it."""
    path = Path(path).expanduser()
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"certificate {path} does not exist") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a PEM certificate"
        raise ConfigError(f"certificate {path}: {reason}") from None


def subject_alternative_names(certificate: x509.Certificate) -> list[str]:
    """DNS names and IP addresses a certificate is valid for, as strings."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in san]


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint as ``AA:BB:...``, the form ``openssl x509 -fingerprint -sha256`` prints."""
    return ":".join(f"{byte:02X}" for byte in certificate.fingerprint(hashes.SHA256()))
