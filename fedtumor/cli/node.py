"""`fedtumor node`: a hospital joins with two commands, `init` (checks, key pair) and `start` (the SuperNode)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import typer
from rich.markup import escape

from fedtumor.cli.common import EXIT_PROBLEMS, app, console, fail
from fedtumor.core.errors import ConfigError, DataError

node_app = typer.Typer(help="A hospital's SuperNode: init (data checks, key pair), start (TLS, key, node config).")
app.add_typer(node_app, name="node")

_HOME_HELP = "Where node settings and keys live (default ~/.fedtumor/node)."


@node_app.command("init")
def node_init(
    data_dir: Path = typer.Option(..., "--data-dir", help="The site's data folder in a BraTS layout."),
    name: str = typer.Option(..., "--name", help="The site's name, e.g. site-a (its id in the centre's results)."),
    ca: Path = typer.Option(None, "--ca", help="The centre's ca.crt, to print its fingerprint for comparison."),
    no_labels: bool = typer.Option(False, "--no-labels", help="A site without segmentations (images only)."),
    home: Path = typer.Option(None, "--home", help=_HOME_HELP),
    force: bool = typer.Option(False, "--force", help="Replace this node's existing key pair and settings."),
) -> None:
    """Run every data check, make the node's key pair, print the public key to send to the centre."""
    from data_loaders.check_report import print_report
    from data_loaders.validation import check_data_dir
    from fedtumor.deployment.node import DEFAULT_HOME, init_node
    from fedtumor.security.certs import fingerprint_sha256, read_certificate

    try:
        report = check_data_dir(data_dir, require_label=not no_labels)
        certificate = read_certificate(ca) if ca is not None else None
    except (DataError, ConfigError) as exc:
        fail(str(exc))
    print_report(report, console)
    if report.problems:
        console.print("[bold red]fix the problems above, then run `fedtumor node init` again[/]; no key was made")
        raise typer.Exit(EXIT_PROBLEMS)
    try:
        settings = init_node(home or DEFAULT_HOME, name, data_dir, labels=not no_labels, overwrite=force)
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"wrote {settings.private_key}: the private key, stays here (mode 600)", soft_wrap=True)
    console.print(f"send {settings.public_key} to the coordinating centre; it holds:", soft_wrap=True)
    sys.stdout.write(settings.public_key.read_text())
    if certificate is not None:
        fingerprint = fingerprint_sha256(certificate)
        console.print(f"CA SHA-256 fingerprint: {fingerprint} (compare it with the centre's)", soft_wrap=True)
    console.print(f"then: fedtumor node start --name {escape(name)} --superlink HOST:PORT --ca ca.crt", soft_wrap=True)


@node_app.command("start")
def node_start(
    superlink: str = typer.Option(..., "--superlink", help="The centre's address, HOST:PORT (its proxy)."),
    ca: Path = typer.Option(..., "--ca", help="The centre's ca.crt (TLS root)."),
    name: str = typer.Option(None, "--name", help="Which node (default: the only one under --home)."),
    home: Path = typer.Option(None, "--home", help=_HOME_HELP),
    runtime_port: int = typer.Option(None, "--runtime-port", help="Local port for the ClientApp (default 9094)."),
    worker: bool = typer.Option(
        False, "--worker", help="Run the ClientApp in one long-lived process (torch, MONAI, the app stay loaded)."
    ),
) -> None:
    """Start the SuperNode with TLS, the node key and the node config; Ctrl-C stops it and all it started."""
    from fedtumor.deployment.node import DEFAULT_HOME, DEFAULT_RUNTIME_PORT, read_node, supernode_command
    from fedtumor.deployment.processes import ManagedProcess
    from fedtumor.deployment.worker_launch import worker_command, write_secret

    try:
        settings = read_node(home or DEFAULT_HOME, name)
        folder = settings.private_key.parent
        port = runtime_port or DEFAULT_RUNTIME_PORT
        secret = write_secret(folder / "superexec.secret") if worker else None  # a fresh one each start
        command = supernode_command(settings, superlink, ca, port, worker_secret=secret)
    except ConfigError as exc:
        fail(str(exc))
    log = folder / "supernode.log"
    node = ManagedProcess(f"supernode-{settings.name}", command, log, dict(os.environ))
    console.print(f"SuperNode {settings.name} started (pid {node.pid}), log {log}; Ctrl-C stops it", soft_wrap=True)
    if secret is not None:  # found by its --parent-pid: stopping the SuperNode stops it too
        worker_log = folder / "worker.log"
        runner = worker_command(f"127.0.0.1:{port}", secret, node.pid)
        helper = ManagedProcess(f"worker-{settings.name}", runner, worker_log, dict(os.environ))
        console.print(f"node worker started (pid {helper.pid}), log {worker_log}", soft_wrap=True)

    def stop(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a parent may have left it ignored (nohup, CI)
        signal.signal(signum, stop)
    try:
        code = node.popen.wait()
    except KeyboardInterrupt:
        node.stop()
        console.print(f"SuperNode {settings.name} stopped")
        return
    fail(f"the SuperNode exited with code {code}; see {log}", code=EXIT_PROBLEMS)
