"""``fedtumor centre ...``: commands for the coordinating centre's machine.

A typer group of its own, registered by ``fedtumor/cli/__init__.py`` with ``add_typer``, so the
composition root stays short. ``proxy-config`` writes the nginx front door described in
``docs/deployment.md``: nobody hand-edits it, and ``nginx -t`` has seen it before it replaces anything.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from fedtumor.core.errors import ConfigError
from fedtumor.deployment.proxy_config import DEFAULT_MAX_BODY_MB

EXIT_BAD_INPUT = 2
centre_app = typer.Typer(help="The coordinating centre: its front-door proxy for the SuperLink.", no_args_is_help=True)
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
