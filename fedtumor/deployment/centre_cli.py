"""``fedtumor centre ...``: commands for the coordinating centre's machine.

A typer group of its own, registered by ``fedtumor/cli/__init__.py`` with ``add_typer``, so the
composition root stays short. ``proxy-config`` writes the nginx front door described in
``docs/deployment.md``: nobody hand-edits it, and ``nginx -t`` has seen it before it replaces anything.
``revoke`` takes a site's key out of the federation and records why, for the running ServerApp's audit log.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from fedtumor.core.errors import ConfigError
from fedtumor.deployment.proxy_config import DEFAULT_MAX_BODY_MB

EXIT_BAD_INPUT = 2
centre_app = typer.Typer(
    help="The coordinating centre: its front-door proxy for the SuperLink, revoking a site's key.",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)  # paths stay whole
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


@centre_app.command("proxy-config")
def proxy_config_command(
    public_host: str = typer.Option(
        ..., "--public-host", help="The name hospitals reach the centre by (in server.pem)."
    ),
    public_port: int = typer.Option(443, "--public-port", help="The proxy's public HTTPS port."),
    superlink: str = typer.Option("127.0.0.1:9093", "--superlink", help="The SuperLink's loopback HOST:PORT."),
    certs: Path = typer.Option(
        ..., "--certs", help="The folder `fedtumor certs` wrote (ca.crt, server.pem, server.key)."
    ),
    out: Path = typer.Option(..., "--out", help="The nginx configuration file to write, e.g. nginx.conf."),
    state_dir: Path = typer.Option(
        None, "--state-dir", help="nginx's pid file, logs/ and tmp/ (default: --out's folder)."
    ),
    listen: str = typer.Option("0.0.0.0", "--listen", help="The IP address the proxy listens on."),
    allow: list[str] = typer.Option([], "--allow", help="Admit only these hospital addresses or CIDRs (repeatable)."),
    max_body_mb: int = typer.Option(DEFAULT_MAX_BODY_MB, "--max-body-mb", help="The largest request nginx accepts."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
) -> None:
    """Write nginx's configuration: TLS on the public address, only the Fleet API forwarded to the SuperLink."""
    from fedtumor.deployment.proxy import check_config, nginx_binary
    from fedtumor.deployment.proxy_config import proxy_settings, write_proxy_config

    out = out.expanduser().absolute()
    try:
        settings = proxy_settings(
            public_host, public_port, superlink, certs, state_dir or out.parent, listen, allow, max_body_mb
        )
        have_nginx = nginx_binary() is not None
        check = (lambda path: check_config(path, settings)) if have_nginx else None
        write_proxy_config(settings, out, overwrite=force, check=check)
    except ConfigError as exc:
        error_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    console.print(f"wrote {out}: https://{public_host}:{public_port} forwards only /v1/fleet/ to {superlink}")
    if not have_nginx:
        console.print("nginx is not installed here: run `nginx -t` with the command below on the proxy's machine")
    console.print(
        f"run it: nginx -c {out} -e {settings.error_log} -g 'daemon off;'   (refusals: {settings.refused_log})"
    )


@centre_app.command("revoke")
def revoke_command(
    node_id: int = typer.Argument(..., help="The node id `flwr supernode register` gave (see `flwr supernode list`)."),
    reason: str = typer.Option(..., "--reason", help="Why, for the audit log (e.g. 'key leaked')."),
    connection: str = typer.Option("fedtumor", "--connection", help="The `flwr` connection to the SuperLink."),
) -> None:
    """Unregister a SuperNode's key now (its later requests are refused) and record it for the run's audit log."""
    import os
    import subprocess

    from fedtumor.deployment.processes import with_venv_tools
    from fedtumor.security.revocations import record_revocation, revocation_register

    if node_id <= 0:
        error_console.print(f"[bold red]error:[/] node id must be a positive integer, got {node_id}")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        out = subprocess.run(
            ["flwr", "supernode", "unregister", str(node_id), connection],
            capture_output=True,
            text=True,
            timeout=120,
            env=with_venv_tools(os.environ),
        )
    except FileNotFoundError:
        error_console.print("[bold red]error:[/] the `flwr` command is not installed here")
        raise typer.Exit(1) from None
    if out.returncode != 0:
        detail = " ".join((out.stdout + out.stderr).split())[-300:]
        error_console.print(f"[bold red]error:[/] the SuperLink did not unregister node {node_id}: {escape(detail)}")
        raise typer.Exit(1)
    register = revocation_register()
    record = record_revocation(register, node_id, reason)
    console.print(f"revoked node {node_id} at {record['revoked_at']}; recorded in {register}")
