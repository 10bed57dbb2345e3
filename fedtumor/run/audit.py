"""The run's audit log: an append-only, hash-chained ``audit.jsonl``, and its verification.

Each line is one JSON object in canonical form (keys sorted, no spaces, ASCII) with
``sha256``, the SHA-256 of the canonical JSON of the object without ``sha256``, and
``prev_sha256``, the ``sha256`` of the line before (64 zeros for the first). Any change to a
line, even one byte, either breaks its canonical form, its own hash or the next line's link.

Models are hashed with :func:`model_sha256` (array names, dtypes, shapes and bytes), so a
hash in the log can be recomputed from any saved copy of the model: ``final_model.pt``,
``best_model.pt`` and the resume checkpoint are checked against the round they hold.

Only numpy and torch here: no Flower, so the log can be checked anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedtumor.run.files import AUDIT_FILE, SUMMARY_FILE
from fedtumor.run.writer import to_jsonable

GENESIS_SHA256 = "0" * 64
HASH_KEY = "sha256"
PREV_KEY = "prev_sha256"
SUMMARY_HEAD_KEY = "audit_head_sha256"  # summary.json: the last entry's hash when the run finished


def canonical_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def entry_sha256(record: Mapping[str, Any]) -> str:
    body = {key: value for key, value in record.items() if key != HASH_KEY}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def model_sha256(arrays: Mapping[str, Any]) -> str:
    """SHA-256 over the arrays in name order: name, dtype, shape and little-endian C-order bytes.

    Accepts numpy arrays or anything with ``.numpy()`` (torch tensors), so the server's
    ArrayRecord and a saved state dict give the same hash.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = arrays[name]
        array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- writing


class AuditLog:
    """Appends entries to ``<run_dir>/audit.jsonl``; reopening continues the chain (resume)."""

    def __init__(self, run_dir: Path | str):
        self.path = Path(run_dir) / AUDIT_FILE
        self.head = GENESIS_SHA256
        self.count = 0
        if self.path.exists():
            lines = [line for line in self.path.read_text(encoding="ascii").splitlines() if line.strip()]
            if lines:
                self.head = json.loads(lines[-1])[HASH_KEY]
                self.count = len(lines)

    def append(self, event: str, **fields: Any) -> str:
        """Write one entry (flushed and fsynced as one line); returns its hash."""
        record = {**to_jsonable(fields), "event": event, "index": self.count, PREV_KEY: self.head}
        record[HASH_KEY] = entry_sha256(record)
        line = canonical_json(record) + "\n"
        with self.path.open("a", encoding="ascii") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.head = record[HASH_KEY]
        self.count += 1
        return self.head


# ----------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class AuditProblem:
    line: int  # 1-based line of audit.jsonl (0: the run folder itself)
    reason: str

    def __str__(self) -> str:
        return f"{AUDIT_FILE} line {self.line}: {self.reason}" if self.line else self.reason


@dataclass(frozen=True)
class AuditReport:
    entries: int
    rounds: int
    models_checked: tuple[str, ...]
    problem: AuditProblem | None

    @property
    def intact(self) -> bool:
        return self.problem is None


def verify_chain(lines: list[str]) -> tuple[list[dict], AuditProblem | None]:
    """Parse and check every line; the records up to the first altered one and that problem."""
    records: list[dict] = []
    previous = GENESIS_SHA256
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return records, AuditProblem(number, "not valid JSON (altered or truncated)")
        if not isinstance(record, dict) or HASH_KEY not in record or PREV_KEY not in record:
            return records, AuditProblem(number, f"not an audit entry (no {HASH_KEY}/{PREV_KEY})")
        if canonical_json(record) != line:
            return records, AuditProblem(number, "not in canonical form (bytes changed)")
        if record[HASH_KEY] != entry_sha256(record):
            return records, AuditProblem(number, "content does not match its sha256 (entry altered)")
        if record[PREV_KEY] != previous:
            return records, AuditProblem(
                number, "prev_sha256 does not match the line before (entry removed or reordered)"
            )
        if record.get("index") != number - 1:
            return records, AuditProblem(number, f"index {record.get('index')!r}, expected {number - 1}")
        previous = record[HASH_KEY]
        records.append(record)
    return records, None


def _saved_model_arrays(path: Path) -> tuple[int | None, Mapping[str, Any]]:
    """(round if recorded, arrays) of a model file the run wrote: a checkpoint or the resume state."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in payload:  # final_model.pt / best_model.pt
        return payload.get("round"), payload["state_dict"]
    return payload.get("round"), payload["arrays"]  # the resume checkpoint


def verify_run(run_dir: Path | str, model_files: tuple[str, ...] = ()) -> AuditReport:
    """Recompute the chain of ``run_dir/audit.jsonl`` and the hashes of the saved models.

    ``model_files`` are bare names in the run folder holding a model and the round it is
    from; the hash of each must equal the ``model_sha256`` the log recorded for that round.
    Raises FileNotFoundError when the folder or its audit log is missing.
    """
    run_dir = Path(run_dir)
    path = run_dir / AUDIT_FILE
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no audit log in this folder")
    text = path.read_bytes()
    try:
        lines = text.decode("ascii").split("\n")
    except UnicodeDecodeError as exc:
        line = text[: exc.start].count(b"\n") + 1
        return AuditReport(0, 0, (), AuditProblem(line, "holds a non-ASCII byte (altered)"))
    if lines and lines[-1] == "":
        lines.pop()
    else:
        return AuditReport(0, 0, (), AuditProblem(len(lines), "does not end in a newline (truncated or altered)"))
    records, problem = verify_chain(lines)
    rounds = {r["round"]: r for r in records if r.get("event") == "round"}
    if problem is not None:
        return AuditReport(len(records), len(rounds), (), problem)

    checked = []
    for name in model_files:
        model_path = run_dir / name
        if not model_path.is_file():
            continue
        try:
            saved_round, arrays = _saved_model_arrays(model_path)
        except Exception as exc:  # a model file the run wrote must load; one that does not was altered
            problem = AuditProblem(0, f"{model_path} cannot be read ({type(exc).__name__}); altered or truncated")
            return AuditReport(len(records), len(rounds), tuple(checked), problem)
        if saved_round is None or saved_round not in rounds:
            continue
        if model_sha256(arrays) != rounds[saved_round]["model_sha256"]:
            line = next(i for i, r in enumerate(records, start=1) if r is rounds[saved_round])
            return AuditReport(
                len(records),
                len(rounds),
                tuple(checked),
                AuditProblem(line, f"{name} (round {saved_round}) does not match the model_sha256 of this entry"),
            )
        checked.append(name)

    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file():
        head = json.loads(summary_path.read_text(encoding="utf-8")).get(SUMMARY_HEAD_KEY)
        recorded = [r[HASH_KEY] for r in records]
        if head is not None and head not in recorded:
            problem = AuditProblem(0, f"{SUMMARY_FILE}'s {SUMMARY_HEAD_KEY} is not in {AUDIT_FILE} (log altered)")
        elif head is not None and head != recorded[-1]:
            later = recorded.index(head) + 2
            problem = AuditProblem(later, "entries after the run finished (appended later)")
    return AuditReport(len(records), len(rounds), tuple(checked), problem)
