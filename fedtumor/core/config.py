"""Run configuration: every knob of a federation, validated up front.

Flower hands the ServerApp and each ClientApp the run config from
``[tool.flwr.app.config]`` (plus ``--run-config`` overrides) as a flat mapping with
kebab-case keys. :func:`load_run_config` turns it into a typed :class:`RunConfig` and
rejects an unknown or ill-typed key with a one-line :class:`ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedtumor.core.errors import ConfigError
from fedtumor.federation.faults import parse_faults

MODEL_NAMES = ("unet", "segresnet", "dynunet", "fets-resunet")
LOSS_NAMES = ("dice", "dicece")
DEVICE_NAMES = ("auto", "cpu", "cuda")
SYNTH_SHAPES = (64, 96, 128)


@dataclass(frozen=True)
class RunConfig:
    """Typed view of the run config. Field ``foo_bar`` is run-config key ``foo-bar``."""

    # Federation
    num_server_rounds: int = 5
    strategy: str = "fedavg"
    strategy_config: str = ""  # the strategy's parameters, "key=value key2=value2"
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available_nodes: int = 2
    round_timeout_s: float = 3600.0
    # Reliability (docs/reliability.md): replies a round needs (0 = min-available-nodes), update-norm
    # bound (0 = off), the run folder to resume ("" = a new run), test-only faults ("" = none)
    min_train_replies: int = 0
    max_update_norm: float = 0.0
    resume: str = ""
    fault_injection: str = ""
    # FeTS Task 1 hooks (fedtumor/federation/fets_hooks.py): a built-in "name key=value ..."; "" keeps the plugin's
    collaborator_selection: str = ""
    round_hyperparameters: str = ""
    # Simulated time (fedtumor/federation/simulated_time.py): profiles CSV ("" = seeded per site id), budget
    site_profiles: str = ""
    time_budget_s: float = 604800.0
    # Client-level differential privacy (fedtumor/federation/privacy.py): 0 noise = off
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 1.0
    # Local training
    local_epochs: int = 1
    learning_rate: float = 1e-3
    batch_size: int = 2
    patch_size: int = 64
    samples_per_volume: int = 2
    queue_length: int = 16
    augment: bool = True
    loss: str = "dicece"
    # Model
    model: str = "unet"
    base_filters: int = 8
    # Preprocessing
    spacing_mm: float = 1.0
    # Data
    data_dir: str = ""
    partitions: str = ""
    heldout: str = ""
    val_fraction: float = 0.25
    server_eval: bool = True
    # Synthetic cohort, used when data-dir is empty
    synth_sites: int = 0
    synth_subjects: int = 24
    synth_test_subjects: int = 6
    synth_seed: int = 0
    synth_shape: int = 64
    # Output and runtime
    output_dir: str = ""
    run_name: str = ""
    seed: int = 0
    device: str = "auto"
    torch_threads: int = 1

    def __post_init__(self) -> None:
        checks = {
            "num-server-rounds": self.num_server_rounds >= 1,
            "fraction-train": 0.0 < self.fraction_train <= 1.0,
            "fraction-evaluate": 0.0 <= self.fraction_evaluate <= 1.0,
            "min-available-nodes": self.min_available_nodes >= 1,
            "round-timeout-s": self.round_timeout_s > 0,
            "min-train-replies": self.min_train_replies >= 0,
            "max-update-norm": 0.0 <= self.max_update_norm < float("inf"),
            "time-budget-s": 0 < self.time_budget_s < float("inf"),
            "dp-noise-multiplier": 0.0 <= self.dp_noise_multiplier < float("inf"),
            "dp-clipping-norm": 0.0 < self.dp_clipping_norm < float("inf"),
            "local-epochs": self.local_epochs >= 1,
            "learning-rate": self.learning_rate > 0,
            "batch-size": self.batch_size >= 1,
            "patch-size": self.patch_size >= 16 and self.patch_size % 8 == 0,
            "samples-per-volume": self.samples_per_volume >= 1,
            "queue-length": self.queue_length >= self.samples_per_volume,
            "base-filters": self.base_filters >= 1,
            "spacing-mm": self.spacing_mm > 0,
            "val-fraction": 0.0 < self.val_fraction < 1.0,
            "synth-sites": self.synth_sites >= 0,
            "synth-subjects": self.synth_subjects >= 1,
            "synth-test-subjects": self.synth_test_subjects >= 1,
            "torch-threads": self.torch_threads >= 0,
        }
        choices = {
            "model": (self.model, MODEL_NAMES),
            "loss": (self.loss, LOSS_NAMES),
            "device": (self.device, DEVICE_NAMES),
            "synth-shape": (self.synth_shape, SYNTH_SHAPES),
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"run-config key '{key}': value {getattr(self, _field(key))!r} is out of range")
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"run-config key '{key}': {value!r} is not one of {', '.join(map(str, allowed))}")
        # The ServerApp runs in the SuperLink's working directory and ClientApps in Ray's.
        for key in ("data-dir", "partitions", "heldout", "output-dir", "site-profiles", "resume"):
            value = getattr(self, _field(key))
            if value and not Path(value).expanduser().is_absolute():
                raise ConfigError(f"run-config key '{key}': {value!r} must be an absolute path")
        self._check_fets_hooks()
        try:
            parse_faults(self.fault_injection)
        except ValueError as exc:
            raise ConfigError(f"run-config key 'fault-injection': {exc}") from None

    def _check_fets_hooks(self) -> None:
        from fedtumor.federation.fets_hooks import hyperparameters_from_spec, selector_from_spec  # no import cycle

        for key, parse in (
            ("collaborator-selection", selector_from_spec),
            ("round-hyperparameters", hyperparameters_from_spec),
        ):
            try:
                parse(getattr(self, _field(key)))
            except ValueError as exc:
                raise ConfigError(f"run-config key '{key}': {exc}") from None

    def to_run_config(self) -> dict[str, Any]:
        """Back to the flat kebab-case mapping Flower uses (for config.json)."""
        return {_key(f.name): getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def _key(field_name: str) -> str:
    return field_name.replace("_", "-")


def _field(key: str) -> str:
    return key.replace("-", "_")


def _coerce(key: str, value: Any, expected: type) -> Any:
    """Accept exactly the TOML type, except an int where a float is wanted."""
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"run-config key '{key}': expected {expected.__name__}, got {type(value).__name__} {value!r}")


_FIELD_TYPES = {f.name: {"int": int, "float": float, "bool": bool, "str": str}[f.type] for f in fields(RunConfig)}


def load_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Validate a Flower run config; unknown or ill-typed keys raise ConfigError naming the key."""
    values: dict[str, Any] = {}
    for key, value in run_config.items():
        name = _field(key)
        if name not in _FIELD_TYPES or "_" in key:
            known = [_key(n) for n in _FIELD_TYPES]
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"unknown run-config key '{key}'{suggestion}")
        values[name] = _coerce(key, value, _FIELD_TYPES[name])
    return RunConfig(**values)


def require_every_key(run_config: Mapping[str, Any]) -> None:
    """ConfigError naming the first RunConfig key the app config lacks (Flower would refuse to override it)."""
    for name in _FIELD_TYPES:
        if _key(name) not in run_config:
            raise ConfigError(f"run-config key '{_key(name)}' is missing from [tool.flwr.app.config] in pyproject.toml")


def fedtumor_home() -> Path:
    """Where cohorts, caches and default run folders live (``$FEDTUMOR_HOME``)."""
    return Path(os.environ.get("FEDTUMOR_HOME", Path.home() / ".cache" / "fedtumor")).expanduser().resolve()


def resolve_output_dir(config: RunConfig) -> Path:
    """Absolute output folder: the ServerApp's working directory is the SuperLink's."""
    if config.output_dir:
        return Path(config.output_dir).expanduser()
    return fedtumor_home() / "runs"
