"""Resuming an interrupted run: the per-round state file and the checks before resuming.

Flower has no resume. After each completed round the ServerApp writes ``resume_state.pt``
into the run folder (atomically: a temporary name, then a rename), holding

- ``round``: the last completed round, and ``model_sha256`` of its global model;
- ``arrays``: the global model after that round (name -> tensor);
- ``strategy``: the strategy's ``state_dict()`` (momentum, moments, control variates, ...);
- ``recorder``: what the server knows about the study so far: ``ledger``, the run's ledger of
  site replies (sites, rounds, failures, data manifests, held-out history, simulated time),
  the evaluator's best score so far and, with early stopping on, its state (``early_stopping``;
  a state file without it starts early stopping afresh);
- ``rng``: the server's Python, NumPy and PyTorch random states.

Strategy and recorder states are nested dicts/lists of plain values and numpy arrays; arrays
are stored as tensors so the file loads with ``torch.load(weights_only=True)`` (no pickle
code runs when a run folder is resumed). A run is resumed with run-config key ``resume``
set to the run folder; its config must match the saved one except for the keys in
:data:`MAY_DIFFER_ON_RESUME`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.run.files import CONFIG_FILE, RESUME_FILE

FORMAT_VERSION = 2  # 2: one ledger of site replies under recorder['ledger'] (1 split it over strategy and recorder)

# Keys that do not change what is trained, so a resumed run may set them differently.
MAY_DIFFER_ON_RESUME = frozenset(
    {
        "resume",
        "num-server-rounds",  # a run may be extended
        "round-timeout-s",
        "min-train-replies",
        "min-available-nodes",
        "server-eval-every",  # how often the held-out set is scored, not what is trained
        "warm-up",  # when the sites load, not what they train
        "fault-injection",
        "device",
        "torch-threads",
        "output-dir",  # the run continues in the resume folder
        "run-name",
        "early-stopping-patience",  # when to stop, not what a round trains
        "early-stopping-min-delta",
        "early-stopping-monitor",
        "cross-site-eval",  # scored after the last round, never trained on
        "cross-site-share-personal",
        "tracking",  # where metrics are also logged
        "tracking-uri",
    }
)


# ----------------------------------------------------------------------------- encoding


def _encode(value: Any) -> Any:
    """numpy arrays -> tensors (dtype and shape kept); containers walked; plain values kept."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(key): _encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, Mapping):
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "python": [version, list(python_state), gauss],
        "numpy": [kind, keys, position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(position), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])


# ----------------------------------------------------------------------------- the state file


@dataclass(frozen=True)
class ResumeState:
    round: int
    arrays: dict[str, np.ndarray]
    strategy: dict[str, Any]
    recorder: dict[str, Any]
    rng: dict[str, Any]
    model_sha256: str


def save_resume_state(run_dir: Path, state: ResumeState) -> Path:
    payload = {
        "format": FORMAT_VERSION,
        "round": int(state.round),
        "model_sha256": state.model_sha256,
        "arrays": _encode(state.arrays),
        "strategy": _encode(state.strategy),
        "recorder": _encode(state.recorder),
        "rng": {**_encode({k: v for k, v in state.rng.items() if k != "torch"}), "torch": state.rng["torch"]},
    }
    path = Path(run_dir) / RESUME_FILE
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load_resume_state(run_dir: Path) -> ResumeState:
    path = Path(run_dir) / RESUME_FILE
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT_VERSION}")
        rng = {**_decode({k: v for k, v in payload["rng"].items() if k != "torch"}), "torch": payload["rng"]["torch"]}
        return ResumeState(
            round=int(payload["round"]),
            arrays=_decode(payload["arrays"]),
            strategy=_decode(payload["strategy"]),
            recorder=_decode(payload["recorder"]),
            rng=rng,
            model_sha256=str(payload["model_sha256"]),
        )
    except Exception as exc:
        raise ConfigError(
            f"run-config key 'resume': {path} is not a readable resume state ({type(exc).__name__}: {exc})"
        ) from None


# ----------------------------------------------------------------------------- checks


def _defaults() -> dict[str, Any]:
    return {f.name.replace("_", "-"): f.default for f in fields(RunConfig)}


def check_resume(config: RunConfig) -> ResumeState:
    """The state to resume from, or a one-line ConfigError naming what does not fit."""
    run_dir = Path(config.resume).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"run-config key 'resume': {run_dir} is not a run folder (no such directory)")
    config_path = run_dir / CONFIG_FILE
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"run-config key 'resume': {config_path} is missing or unreadable; not a run folder"
        ) from None
    if not (run_dir / RESUME_FILE).is_file():
        raise ConfigError(f"run-config key 'resume': {run_dir} has no {RESUME_FILE}; no round was completed to resume")
    current, defaults = config.to_run_config(), _defaults()
    for key, value in current.items():
        if key in MAY_DIFFER_ON_RESUME:
            continue
        expected = saved.get(key, defaults.get(key))
        if expected != value:
            raise ConfigError(
                f"run-config key '{key}': {value!r} differs from {expected!r} in the run being resumed ({config_path})"
            )
    state = load_resume_state(run_dir)
    if state.round >= config.num_server_rounds:
        raise ConfigError(
            f"run-config key 'num-server-rounds': the run in {run_dir} already completed round {state.round}; "
            f"set num-server-rounds above {state.round} to continue it"
        )
    return state
