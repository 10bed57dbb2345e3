"""A SuperNode's authentication key pair, in the format Flower's node authentication reads.

Flower 1.41 authenticates SuperNodes with an elliptic-curve key on a NIST curve: the
SuperNode signs with its private key in OpenSSH format
(``flower-supernode --auth-supernode-private-key site.key``) and the coordinating centre
registers the public key in OpenSSH format (``flwr supernode register site.pub``). The
private key never leaves the hospital.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedtumor.core.errors import ConfigError
from fedtumor.security.certs import write_private_key

_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class NodeKeyFiles:
    private_key: Path
    public_key: Path


def make_node_key(out_dir: Path | str, name: str, overwrite: bool = False) -> NodeKeyFiles:
    """Write ``<name>.key`` (private, mode 600) and ``<name>.pub`` into ``out_dir``."""
    if not _NODE_NAME.match(name):
        raise ConfigError(f"node-key: --name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"node-key: cannot create {out_dir}: {exc.strerror}") from None
    files = NodeKeyFiles(out_dir / f"{name}.key", out_dir / f"{name}.pub")
    for path in (files.private_key, files.public_key):
        if path.exists() and not overwrite:
            raise ConfigError(f"node-key: {path} already exists (pass --force to replace it)")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    try:
        for path in (files.private_key, files.public_key):
            path.unlink(missing_ok=True)
        write_private_key(files.private_key, private)
        files.public_key.write_bytes(public + f" fedtumor-{name}\n".encode())
    except OSError as exc:
        raise ConfigError(f"node-key: cannot write into {out_dir}: {exc.strerror}") from None
    return files
