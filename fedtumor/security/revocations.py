"""The coordinating centre's register of revoked SuperNode keys, read by the running ServerApp.

``fedtumor centre revoke NODE_ID`` unregisters the node in the SuperLink (``flwr supernode
unregister``: from then on the SuperLink answers the node's requests with 401 and the
SuperNode shuts itself down) and then appends one line to this register. Flower does not tell
a ServerApp why a node vanished, so the ServerApp reads the register when it closes a round
and writes a ``node-revoked`` entry, naming the site, to the run's audit log. The register
lives on the centre's machine under ``$FEDTUMOR_HOME/centre/``, where the SuperLink's
ServerApps run with the same ``FEDTUMOR_HOME``.

Example::

    register = revocation_register()
    record_revocation(register, node_id=4242, reason="laptop stolen")
    read_revocations(register)[4242]["reason"]  # 'laptop stolen'
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REGISTER_FILE = "revocations.jsonl"


def revocation_register(home: Path | None = None) -> Path:
    """``<FEDTUMOR_HOME>/centre/revocations.jsonl`` (the file may not exist yet)."""
    from fedtumor.core.config import fedtumor_home

    return (home or fedtumor_home()) / "centre" / REGISTER_FILE


def record_revocation(register: Path, node_id: int, reason: str) -> dict[str, Any]:
    """Append one revocation (flushed and fsynced, one line); returns it."""
    if isinstance(node_id, bool) or not isinstance(node_id, int) or node_id <= 0:
        raise ValueError(f"node id must be a positive integer, got {node_id!r}")
    record = {
        "node_id": node_id,
        "revoked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reason": " ".join(reason.split()),
    }
    register.parent.mkdir(parents=True, exist_ok=True)
    with register.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return record


def read_revocations(register: Path) -> dict[int, dict[str, Any]]:
    """``{node_id: record}`` of every revocation so far (the first per node); {} without a register.

    A line that is not a revocation (a torn write, a hand edit) is skipped: the register only
    adds to the audit log, and the SuperLink's refusal does not depend on it.
    """
    try:
        lines = register.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    revoked: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            record = json.loads(line)
            node_id = int(record["node_id"])
        except (ValueError, KeyError, TypeError):
            continue
        revoked.setdefault(node_id, record)
    return revoked
