"""Security commands: the SuperLink's certificates, a certificate's fingerprint, a node's key pair."""

from __future__ import annotations

from pathlib import Path

import typer

from fedtumor.cli.common import app, console, fail
from fedtumor.core.errors import ConfigError


@app.command()
def certs(
    out: Path = typer.Option(..., "--out", help="Folder for ca.crt, ca.key, server.pem, server.key."),
    host: list[str] = typer.Option([], "--host", help="DNS name the SuperLink is reached by (repeatable)."),
    ip: list[str] = typer.Option([], "--ip", help="IP address the SuperLink is reached by (repeatable)."),
    days: int = typer.Option(365, "--days", help="Validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace existing files (re-register every node's trust)."),
) -> None:
    """Make a CA and a SuperLink TLS certificate for these names (private keys mode 600)."""
    from fedtumor.security.certs import make_superlink_certificates, read_certificate, subject_alternative_names

    try:
        files = make_superlink_certificates(out, host, ip, valid_days=days, overwrite=force)
    except ConfigError as exc:
        fail(str(exc))
    names = ", ".join(subject_alternative_names(read_certificate(files.server_cert)))
    console.print(f"wrote {files.server_cert} and {files.server_key} for the SuperLink (valid for {names})")
    console.print(f"wrote {files.ca_cert}: give it to every SuperNode and every `flwr` user")
    console.print(f"wrote {files.ca_key}: keep it private, offline if you can")


@app.command("cert-info")
def cert_info(
    certificate: Path = typer.Argument(..., help="A PEM certificate, e.g. the ca.crt the centre sent."),
) -> None:
    """Show a certificate's names, validity and SHA-256 fingerprint (compare it with the sender's)."""
    from fedtumor.security.certs import fingerprint_sha256, read_certificate, subject_alternative_names

    try:
        cert = read_certificate(certificate)
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"subject: {cert.subject.rfc4514_string()}", soft_wrap=True)
    console.print(f"issuer: {cert.issuer.rfc4514_string()}", soft_wrap=True)
    console.print(f"valid for: {', '.join(subject_alternative_names(cert)) or '-'}", soft_wrap=True)
    console.print(
        f"valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )
    console.print(f"SHA-256 fingerprint: {fingerprint_sha256(cert)}", soft_wrap=True)


@app.command("node-key")
def node_key(
    name: str = typer.Option(..., "--name", help="The site's name, e.g. site-a."),
    out: Path = typer.Option(..., "--out", help="Folder for NAME.key (private) and NAME.pub."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key pair."),
) -> None:
    """Make a SuperNode's authentication key pair; the coordinating centre registers NAME.pub."""
    from fedtumor.security.node_keys import make_node_key

    try:
        files = make_node_key(out, name, overwrite=force)
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"wrote {files.private_key}: stays at the site (flower-supernode --auth-supernode-private-key)")
    console.print(f"wrote {files.public_key}: send it to the coordinating centre (flwr supernode register)")
