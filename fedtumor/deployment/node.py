"""A hospital's SuperNode in two commands: `fedtumor node init` and `fedtumor node start`.

``init`` (after the CLI has run every data check) makes the node's key pair and writes its
settings, ``<home>/<name>/node.toml``::

    name = "site-a"
    data-dir = "/data/site-a"
    labels = true
    private-key = "/root/.fedtumor/node/site-a/site-a.key"

``start`` reads them and runs ``flower-supernode`` with TLS (the centre's CA), the private key
and the node config (``data-dir``, ``site-id``, ``labels``), and stops it, with everything it
started, on Ctrl-C or SIGTERM. Nothing here listens beyond the node itself: the SuperNode only
dials out to the SuperLink (its Runtime API for the ClientApp stays on 127.0.0.1). With
``--worker`` a node worker (:mod:`fedtumor.deployment.node_worker`) runs the ClientApp in one
long-lived process, reached through that same local API and a 0600 secret in the node folder.

Example::

    settings = init_node(Path("~/.fedtumor/node"), "site-a", Path("/data/site-a"), labels=True)
    command = supernode_command(settings, "superlink.example.org:443", Path("ca.crt"))
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fedtumor.core.errors import ConfigError
from fedtumor.deployment.worker_launch import supernode_flags
from fedtumor.security.node_keys import NodeKeyFiles, make_node_key

DEFAULT_HOME = Path("~/.fedtumor/node")
DEFAULT_RUNTIME_PORT = 9094  # flower-supernode's own default for its Runtime API
SETTINGS_FILE = "node.toml"
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True)
class NodeSettings:
    """What `node start` needs, as `node init` wrote it."""

    name: str
    data_dir: Path
    labels: bool
    private_key: Path

    @property
    def public_key(self) -> Path:
        return self.private_key.with_suffix(".pub")


def _toml_string(value: str) -> str:
    if any(ch in value for ch in '"\\\n'):
        raise ConfigError(f"node: {value!r} holds a quote, backslash or newline, which the node config cannot carry")
    return f'"{value}"'


def init_node(home: Path, name: str, data_dir: Path, labels: bool, overwrite: bool = False) -> NodeSettings:
    """Make ``<home>/<name>/<name>.key|.pub`` and ``node.toml``; ConfigError (one line) when they exist."""
    folder = Path(home).expanduser() / name
    keys: NodeKeyFiles = make_node_key(folder, name, overwrite=overwrite)  # validates the name
    settings = NodeSettings(name, Path(data_dir).expanduser().resolve(), labels, keys.private_key.resolve())
    text = (
        f"name = {_toml_string(settings.name)}\n"
        f"data-dir = {_toml_string(str(settings.data_dir))}\n"
        f"labels = {'true' if labels else 'false'}\n"
        f"private-key = {_toml_string(str(settings.private_key))}\n"
    )
    (folder / SETTINGS_FILE).write_text(text)
    return settings


def read_node(home: Path, name: str | None = None) -> NodeSettings:
    """The settings `node init` wrote; without ``name``, the only node under ``home``."""
    home = Path(home).expanduser()
    if name is None:
        found = sorted(p.parent.name for p in home.glob(f"*/{SETTINGS_FILE}"))
        if len(found) != 1:
            what = "no node" if not found else f"{len(found)} nodes ({', '.join(found)})"
            raise ConfigError(f"node start: {what} under {home}; run `fedtumor node init` or pass --name")
        name = found[0]
    path = home / name / SETTINGS_FILE
    try:
        table = tomllib.loads(path.read_text())
        settings = NodeSettings(
            name=str(table["name"]),
            data_dir=Path(table["data-dir"]),
            labels=bool(table["labels"]),
            private_key=Path(table["private-key"]),
        )
    except FileNotFoundError:
        raise ConfigError(f"node start: {path} does not exist; run `fedtumor node init --name {name}`") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"node start: {path} is not a node settings file ({type(exc).__name__}: {exc})") from None
    for what, file in (("private key", settings.private_key), ("data folder", settings.data_dir)):
        if not file.exists():
            raise ConfigError(f"node start: the {what} {file} named in {path} does not exist")
    return settings


def supernode_command(
    settings: NodeSettings,
    superlink: str,
    ca_cert: Path,
    runtime_port: int | None = None,
    worker_secret: Path | None = None,
) -> list[str]:
    """``flower-supernode`` for these settings: TLS with ``ca_cert``, node authentication, the node config.

    With ``worker_secret`` the SuperNode leaves its ClientApp tasks to a node worker holding it.
    """
    if not _ADDRESS.match(superlink):
        raise ConfigError(f"node start: --superlink {superlink!r} must be HOST:PORT")
    ca_cert = Path(ca_cert).expanduser()
    if not ca_cert.is_file():
        raise ConfigError(f"node start: --ca {ca_cert} does not exist")
    node_config = (
        f"data-dir={_toml_string(str(settings.data_dir))} site-id={_toml_string(settings.name)} "
        f"labels={'true' if settings.labels else 'false'}"
    )
    command = [
        "flower-supernode",
        "--superlink",
        superlink,
        "--root-certificates",
        str(ca_cert),
        "--auth-supernode-private-key",
        str(settings.private_key),
        "--node-config",
        node_config,
    ]
    command += ["--host", "127.0.0.1"]  # its Runtime API, for the ClientApp process: never beyond the node
    if runtime_port is not None:
        command += ["--port", str(runtime_port)]
    if worker_secret is not None:
        command += supernode_flags(worker_secret)
    return command
