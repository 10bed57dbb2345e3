"""A real deployment on one machine: a SuperLink and SuperNodes as separate processes on 127.0.0.1.

The same processes a coordinating centre and its hospitals run (``flower-superlink``,
``flower-supernode``, and nginx as the centre's front door), with TLS, SuperNode
authentication and the proxy unless asked otherwise: SuperNodes connect to the proxy's port,
which forwards only the Fleet API, and the ``flwr`` CLI uses the SuperLink's own 127.0.0.1
listener, as a researcher on the centre's machine would. Used by ``scripts/local_federation.sh``
and the deployment tests. Every process started here is stopped by
:meth:`LoopbackFederation.close` (also on errors, through ``with``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from fedtumor.core.errors import ConfigError
from fedtumor.deployment.processes import ManagedProcess, free_port, with_venv_tools
from fedtumor.deployment.proxy import start_proxy
from fedtumor.deployment.proxy_config import ProxySettings, proxy_settings
from fedtumor.deployment.worker_launch import supernode_flags, worker_command, write_secret
from fedtumor.security.certs import CertificateFiles

CONNECTION = "fedtumor"  # the SuperLink's local listener, in this federation's FLWR_HOME
PUBLIC_CONNECTION = "fedtumor-public"  # the proxy's public address, as an outsider would use it
SUPERLINK_READY = "Uvicorn running on"
SUPERNODE_READY = "SuperNode ID:"
START_TIMEOUT_S = 60.0


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower's tools: this venv first on PATH, a private FLWR_HOME, no update check."""
    return with_venv_tools({**os.environ, "FLWR_HOME": str(flwr_home), "FLWR_DISABLE_UPDATE_CHECK": "1"})


def _toml_string(value: str, what: str) -> str:
    if "'" in value or "\n" in value:
        raise ConfigError(f"{what} {value!r} cannot contain a quote or a newline")
    return f"'{value}'"


def write_connection(
    flwr_home: Path, address: str, root_certificates: Path | None, more: dict[str, str] | None = None
) -> Path:
    """Flower's ``config.toml``: connection ``fedtumor`` (the default) to ``address``, plus ``more``
    (name -> address); no root certificate means insecure."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    security = (
        f"root-certificates = {_toml_string(str(root_certificates), 'root certificate path')}\n"
        if root_certificates
        else "insecure = true\n"
    )
    tables = "".join(
        f'\n[superlink.{name}]\naddress = "{target}"\n{security}'
        for name, target in {CONNECTION: address, **(more or {})}.items()
    )
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{CONNECTION}"\n{tables}')
    return path


class LoopbackFederation:
    """Start a SuperLink, its proxy and SuperNodes under ``workdir``; ``certs=None`` runs without TLS.

    With ``proxy`` (the default) SuperNodes reach the SuperLink only through nginx, which
    needs the certificates; without it they connect to the SuperLink's port directly.
    """

    def __init__(
        self,
        workdir: Path,
        certs: CertificateFiles | None,
        node_auth: bool = True,
        proxy: bool = True,
        database: Path | None = None,
        node_max_retries: int | None = 3,
    ):
        if node_auth and certs is None:
            raise ConfigError("node authentication needs TLS: give certificates or turn node_auth off")
        if proxy and certs is None:
            raise ConfigError("the proxy terminates TLS: give certificates or turn the proxy off")
        self.workdir = Path(workdir)
        self.certs = certs
        self.node_auth = node_auth
        self.use_proxy = proxy
        self.flwr_home = self.workdir / "flwr-home"
        self.logs = self.workdir / "logs"
        self.env = flower_env(self.flwr_home)
        self.address: str | None = None  # the SuperLink's own listener: Control API, `flwr`
        self.fleet_address: str | None = None  # where SuperNodes connect: the proxy, or the SuperLink
        self.superlink: ManagedProcess | None = None
        self.proxy: ManagedProcess | None = None
        self.proxy_settings: ProxySettings | None = None
        self.supernodes: dict[str, ManagedProcess] = {}
        self.workers: dict[str, ManagedProcess] = {}  # node workers, by site
        self.database = database  # the SuperLink's state file; None keeps it in memory (lost on restart)
        self.node_max_retries = node_max_retries  # None: SuperNodes wait for the SuperLink for ever
        self._superlink_starts = 0

    def __enter__(self) -> LoopbackFederation:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the coordinating centre ------------------------------------------------------
    def start_superlink(self) -> str:
        """Start the SuperLink (Fleet, Control and Runtime APIs share one port in Flower 1.41), then its proxy."""
        port = free_port()
        self._launch_superlink(port)
        self.address = self.fleet_address = f"127.0.0.1:{port}"
        if self.use_proxy:
            self.fleet_address = self._start_proxy()
        public = {PUBLIC_CONNECTION: self.fleet_address} if self.use_proxy else {}
        write_connection(self.flwr_home, self.address, self.certs.ca_cert if self.certs else None, public)
        return self.address

    def restart_superlink(self) -> None:
        """Start the SuperLink again on its port and state database, after it stopped or was killed."""
        if self.address is None or self.database is None:
            raise RuntimeError("restart needs a started SuperLink with a state database")
        if self.superlink is not None and self.superlink.running():
            self.superlink.stop()
        self._launch_superlink(int(self.address.rsplit(":", 1)[1]))

    def _launch_superlink(self, port: int) -> None:
        command = [
            "flower-superlink",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--disable-runtime-dependency-installation",  # the app runs in this venv; no `uv sync`
        ]
        if self.database is not None:
            command += ["--database", str(self.database)]
        if self.certs:
            command += [
                "--ssl-ca-certfile",
                str(self.certs.ca_cert),
                "--ssl-certfile",
                str(self.certs.server_cert),
                "--ssl-keyfile",
                str(self.certs.server_key),
            ]
        else:
            command.append("--insecure")
        if self.node_auth:
            command.append("--enable-supernode-auth")
        self._superlink_starts += 1  # each start its own log, so "ready" is this start's
        log_name = "superlink.log" if self._superlink_starts == 1 else f"superlink-{self._superlink_starts}.log"
        self.superlink = ManagedProcess("superlink", command, self.logs / log_name, self.env, cwd=self.workdir)
        if not self.superlink.wait_for_log(SUPERLINK_READY, START_TIMEOUT_S):
            raise RuntimeError(f"the SuperLink did not start; see {self.superlink.log_path}")

    def _start_proxy(self) -> str:
        """nginx on its own port, forwarding only the Fleet API to the SuperLink; its address."""
        port = free_port()
        self.proxy_settings = proxy_settings(
            public_host="127.0.0.1",
            public_port=port,
            superlink=self.address,
            certs_dir=self.certs.server_cert.parent,
            state_dir=self.workdir / "proxy",
            listen_host="127.0.0.1",
            log_dir=self.logs / "proxy",
        )
        self.proxy = start_proxy(self.proxy_settings, self.env)
        return f"127.0.0.1:{port}"

    def flwr(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """Run a ``flwr`` CLI command against this SuperLink."""
        return subprocess.run(
            ["flwr", *args], env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=timeout_s
        )

    def register_node(self, public_key: Path) -> str:
        """Register a SuperNode's public key (``flwr supernode register``); returns its node id."""
        out = self.flwr("supernode", "register", str(public_key), CONNECTION, "--format", "json")
        try:
            reply = json.loads(out.stdout)
        except json.JSONDecodeError:
            reply = {}
        if not reply.get("success"):
            detail = " ".join((out.stdout + out.stderr).split())[:300]
            raise RuntimeError(f"registering {public_key} failed: {detail}")
        return str(reply["node-id"])

    def node_statuses(self) -> dict[str, str]:
        """node id -> status (``registered``, ``online``, ``offline``...) as the SuperLink lists them."""
        out = self.flwr("supernode", "list", CONNECTION, "--format", "json")
        try:
            nodes = json.loads(out.stdout).get("nodes", [])
        except json.JSONDecodeError:
            return {}
        return {str(node["node-id"]): node.get("status", "?") for node in nodes}

    # -- a hospital ---------------------------------------------------------------------
    def start_supernode(
        self, name: str, data_dir: Path, private_key: Path | None = None, wait: bool = True, worker: bool = False
    ) -> ManagedProcess:
        """Start a SuperNode for one site; with ``wait``, return once the SuperLink accepted it.

        With ``worker``, its ClientApp tasks run in a long-lived node worker
        (:mod:`fedtumor.deployment.node_worker`) instead of a fresh process per message.
        """
        if self.fleet_address is None:
            raise RuntimeError("start the SuperLink first")
        node_config = f"data-dir={_toml_string(str(data_dir), 'data folder')} site-id={_toml_string(name, 'site id')}"
        runtime_port = free_port()
        command = [
            "flower-supernode",
            "--superlink",
            self.fleet_address,
            "--node-config",
            node_config,
            "--port",
            str(runtime_port),  # the SuperNode's own runtime API (127.0.0.1), for its ClientApp
        ]
        secret_file = write_secret(self.workdir / "node-workers" / f"{name}.secret") if worker else None
        if secret_file is not None:
            command += supernode_flags(secret_file)
        if self.node_max_retries is not None:
            command += ["--max-retries", str(self.node_max_retries)]
        command += ["--root-certificates", str(self.certs.ca_cert)] if self.certs else ["--insecure"]
        if private_key is not None:
            command += ["--auth-supernode-private-key", str(private_key)]
        process = ManagedProcess(f"supernode-{name}", command, self.logs / f"supernode-{name}.log", self.env)
        self.supernodes[name] = process
        if secret_file is not None:  # found by its --parent-pid, so stopping the SuperNode stops it too
            command = worker_command(f"127.0.0.1:{runtime_port}", secret_file, process.pid)
            self.workers[name] = ManagedProcess(f"worker-{name}", command, self.logs / f"worker-{name}.log", self.env)
        if wait and not process.wait_for_log(SUPERNODE_READY, START_TIMEOUT_S):
            raise RuntimeError(f"SuperNode {name} was not accepted by the SuperLink; see {process.log_path}")
        return process

    # -- cleanup ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every SuperNode, the proxy, then the SuperLink, each with all the processes it started."""
        for process in [*self.workers.values(), *self.supernodes.values()]:
            process.stop()
        if self.proxy is not None:
            self.proxy.stop()
        if self.superlink is not None:
            self.superlink.stop()
