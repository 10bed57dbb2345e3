"""How to start a SuperNode with a node worker (:mod:`fedtumor.deployment.node_worker`) beside it.

Kept apart from the worker so that the launchers (``fedtumor node start --worker``, the loopback
federation) do not import Flower's client runtime.

Example::

    secret = write_secret(Path("~/.fedtumor/node/site-a/superexec.secret"))
    supernode = ["flower-supernode", ..., "--port", "9094", *supernode_flags(secret)]
    worker = worker_command("127.0.0.1:9094", secret, parent_pid=supernode_pid)
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

SECRET_BYTES = 32


def write_secret(path: Path) -> Path:
    """A fresh random SuperExec secret at ``path``, readable by its owner only (0600)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(SECRET_BYTES))
    return path


def supernode_flags(secret_file: Path) -> list[str]:
    """``flower-supernode`` flags that leave its ClientApp tasks to a worker holding ``secret_file``."""
    return ["--isolation", "process", "--superexec-auth-secret-file", str(secret_file)]


def worker_command(runtime_api_address: str, secret_file: Path, parent_pid: int) -> list[str]:
    """The worker for the SuperNode ``parent_pid`` whose Runtime API is ``runtime_api_address``."""
    return [
        sys.executable, "-m", "fedtumor.deployment.node_worker", "--runtime-api-address", runtime_api_address,
        "--secret-file", str(secret_file), "--parent-pid", str(parent_pid),
    ]  # fmt: skip
