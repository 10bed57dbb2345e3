"""Run configuration: every knob of a federation, validated up front.

Flower hands the ServerApp and each ClientApp the run config from
``[tool.flwr.app.config]`` (plus ``--run-config`` overrides) as a flat mapping with
kebab-case keys. :func:`load_run_config` turns it into a typed :class:`RunConfig` and
rejects an unknown or ill-typed key with a one-line :class:`ConfigError` naming it;
:func:`read_run_config` does what ``flwr run`` does first (an app's table plus overrides)
for everything that starts outside Flower.

The field defaults of :class:`RunConfig` are the shipped ``[tool.flwr.app.config]`` values
(a test keeps them equal): an installed fedtumor without the app folder reads the same config.
Keys that name federation plug-ins (collaborator selection, round hyperparameters, faults)
are checked by ``fedtumor.federation.settings``, which knows those plug-ins.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedtumor.core.errors import ConfigError

MODEL_NAMES = ("unet", "segresnet", "dynunet", "fets-resunet")
LOSS_NAMES = ("dice", "dicece")
DEVICE_NAMES = ("auto", "cpu", "cuda")
SYNTH_SHAPES = (64, 96, 128)
SYNTH_GEOMETRIES = ("cube", "brats")  # data_loaders/synthetic/geometry.py
OPTIMIZER_NAMES = ("adam", "sgd")  # fedtumor/core/optimizers.py
TIME_MODELS = ("fedtumor", "fets")  # fedtumor/federation/fets_ledger.py
PERSONAL_HELDOUT_MODES = ("final", "every-round", "never")  # client_app/personal.py
EARLY_STOPPING_MONITORS = ("auto", "heldout", "validation")  # fedtumor/run/early_stopping.py
TRACKING_BACKENDS = ("", "mlflow")  # fedtumor/run/tracking.py; "" = off


@dataclass(frozen=True)
class RunConfig:
    """Typed view of the run config. Field ``foo_bar`` is run-config key ``foo-bar``.

    Defaults are pyproject's ``[tool.flwr.app.config]`` values, key for key.
    """

    # Federation
    num_server_rounds: int = 8
    strategy: str = "fedavg"
    strategy_config: str = ""  # the strategy's parameters, "key=value key2=value2"
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available_nodes: int = 2
    round_timeout_s: float = 1800.0
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
    time_model: str = "fedtumor"  # "fets": FeTS Challenge profiles and scoring (docs/fets.md)
    # Client-level differential privacy (fedtumor/federation/privacy.py): 0 noise = off; epsilon reported at dp-delta
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 1.0
    dp_delta: float = 1e-5
    # Local training
    local_epochs: int = 1
    learning_rate: float = 0.01
    # Local optimiser (fedtumor/core/optimizers.py), fresh each round; momentum is SGD's only
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    # Early stopping (fedtumor/run/early_stopping.py); auto: held-out when the server evaluates, else validation
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    early_stopping_monitor: str = "auto"
    batch_size: int = 2
    patch_size: int = 48
    samples_per_volume: int = 4
    queue_length: int = 16
    augment: bool = True
    loss: str = "dicece"
    # Model
    model: str = "unet"
    base_filters: int = 8
    # Preprocessing
    spacing_mm: float = 3.0
    # Data
    data_dir: str = ""
    partitions: str = ""
    heldout: str = ""
    val_fraction: float = 0.25
    server_eval: bool = True
    server_eval_every: int = 1  # held-out scoring every N rounds and of the final model; 0: the final model only
    warm_up: bool = False  # each site loads its app and data before round 1 (fedtumor/federation/warm_up.py)
    # Personal models (FedBN, Ditto): when sites score theirs on the held-out set (simulation only)
    personal_heldout: str = "final"
    # Cross-site evaluation (docs/evaluation.md) at the end of a run; personal models leave a site only if shared
    cross_site_eval: bool = False
    cross_site_share_personal: bool = False
    # Synthetic cohort, used when data-dir is empty
    synth_sites: int = 0
    synth_subjects: int = 32
    synth_test_subjects: int = 6
    synth_seed: int = 0
    synth_shape: int = 64
    synth_geometry: str = "cube"  # "brats": 240x240x155 at 1 mm, LPS (synth-shape then unused)
    # Output and runtime
    output_dir: str = ""
    run_name: str = ""
    seed: int = 0
    device: str = "auto"
    torch_threads: int = 1
    # Experiment tracking (docs/tracking.md): "" = off; tracking-uri "" = a store inside the run folder
    tracking: str = ""
    tracking_uri: str = ""

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
            "dp-delta": 0.0 < self.dp_delta < 1.0,
            "local-epochs": self.local_epochs >= 1,
            "learning-rate": self.learning_rate > 0,
            "momentum": 0.0 <= self.momentum < 1.0,
            "weight-decay": 0.0 <= self.weight_decay < float("inf"),
            "early-stopping-patience": self.early_stopping_patience >= 0,
            "early-stopping-min-delta": 0.0 <= self.early_stopping_min_delta < float("inf"),
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
            "server-eval-every": self.server_eval_every >= 0,
        }
        choices = {
            "model": (self.model, MODEL_NAMES),
            "loss": (self.loss, LOSS_NAMES),
            "device": (self.device, DEVICE_NAMES),
            "synth-shape": (self.synth_shape, SYNTH_SHAPES),
            "synth-geometry": (self.synth_geometry, SYNTH_GEOMETRIES),
            "optimizer": (self.optimizer, OPTIMIZER_NAMES),
            "time-model": (self.time_model, TIME_MODELS),
            "personal-heldout": (self.personal_heldout, PERSONAL_HELDOUT_MODES),
            "early-stopping-monitor": (self.early_stopping_monitor, EARLY_STOPPING_MONITORS),
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"run-config key '{key}': value {getattr(self, _field(key))!r} is out of range")
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"run-config key '{key}': {value!r} is not one of {', '.join(map(str, allowed))}")
        if self.site_profiles and self.time_model == "fets":
            raise ConfigError("run-config key 'site-profiles': applies to time-model='fedtumor' only, not 'fets'")
        if self.momentum and self.optimizer != "sgd":
            raise ConfigError(f"run-config key 'momentum': applies to optimizer='sgd' only, not {self.optimizer!r}")
        if self.early_stopping_patience and not (self.heldout_every_round or self.fraction_evaluate > 0):
            raise ConfigError(
                "run-config key 'early-stopping-patience': nothing to monitor; "
                "set fraction-evaluate > 0, or server-eval=true with server-eval-every=1"
            )
        if self.early_stopping_patience and self.early_stopping_monitor == "heldout" and not self.heldout_every_round:
            raise ConfigError(
                "run-config key 'early-stopping-monitor': 'heldout' needs server-eval=true and server-eval-every=1"
            )
        if self.early_stopping_patience and self.early_stopping_monitor == "validation":
            if not (self.fraction_evaluate > 0 and self.val_fraction > 0):
                raise ConfigError(
                    "run-config key 'early-stopping-monitor': 'validation' needs fraction-evaluate > 0 "
                    "and val-fraction > 0"
                )
        if self.cross_site_share_personal and not self.cross_site_eval:
            raise ConfigError("run-config key 'cross-site-share-personal': applies with cross-site-eval=true only")
        _check_tracking(self.tracking, self.tracking_uri)
        # The ServerApp runs in the SuperLink's working directory and ClientApps in Ray's.
        for key in ("data-dir", "partitions", "heldout", "output-dir", "site-profiles", "resume"):
            value = getattr(self, _field(key))
            if value and not Path(value).expanduser().is_absolute():
                raise ConfigError(f"run-config key '{key}': {value!r} must be an absolute path")

    @property
    def heldout_every_round(self) -> bool:
        """Whether the server scores the held-out set after every round (what a held-out monitor needs)."""
        return self.server_eval and self.server_eval_every == 1

    @property
    def stops_on_validation(self) -> bool:
        """Whether early stopping watches validation: asked for, or ``auto`` without a held-out score every round."""
        return self.early_stopping_monitor == "validation" or (
            self.early_stopping_monitor == "auto" and not self.heldout_every_round
        )

    def to_run_config(self) -> dict[str, Any]:
        """Back to the flat kebab-case mapping Flower uses (for config.json)."""
        return {_key(f.name): getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def _key(field_name: str) -> str:
    return field_name.replace("_", "-")


def _field(key: str) -> str:
    return key.replace("-", "_")


def _check_tracking(tracking: str, tracking_uri: str) -> None:
    if tracking not in TRACKING_BACKENDS:
        raise ConfigError(f"run-config key 'tracking': {tracking!r} is not one of '' (off), 'mlflow'")
    if tracking_uri and not tracking:
        raise ConfigError("run-config key 'tracking-uri': applies with tracking='mlflow' only")
    if tracking_uri and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", tracking_uri):
        raise ConfigError(
            f"run-config key 'tracking-uri': {tracking_uri!r} is not a URI (e.g. http://host:5000, sqlite:////abs/mlflow.db)"
        )


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


def require_every_key(run_config: Mapping[str, Any], source: Path | str = "pyproject.toml") -> None:
    """ConfigError naming the first RunConfig key the app config lacks (Flower would refuse to override it)."""
    for name in _FIELD_TYPES:
        if _key(name) not in run_config:
            raise ConfigError(f"run-config key '{_key(name)}' is missing from [tool.flwr.app.config] in {source}")


APP_FILE = "pyproject.toml"  # a Flower app folder holds its run config in this file's [tool.flwr.app.config]


def _read_app_table(app_dir: Path) -> dict[str, Any]:
    pyproject = Path(app_dir) / APP_FILE
    try:
        with pyproject.open("rb") as handle:
            table = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{pyproject}: no readable [tool.flwr.app.config] table ({type(exc).__name__})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.flwr.app.config] is not a table")
    return table


def app_config_table(app_dir: Path) -> dict[str, Any]:
    """``[tool.flwr.app.config]`` of ``app_dir/pyproject.toml``, holding every key; ConfigError naming the file."""
    table = _read_app_table(app_dir)
    require_every_key(table, Path(app_dir) / APP_FILE)
    return table


def find_app_dir(directory: Path) -> Path | None:
    """``directory`` when it is a Flower app folder (its pyproject.toml has the config table), else None."""
    try:
        _read_app_table(directory)
    except ConfigError:
        return None
    return Path(directory)


def parse_overrides(overrides: str) -> dict[str, Any]:
    """``--run-config`` text parsed by Flower's own parser; a one-line ConfigError when it cannot be parsed."""
    if not overrides.strip():
        return {}
    from flwr.common.config import parse_config_args  # only this function of Flower; importing it is not cheap

    try:
        return parse_config_args([overrides])
    except Exception as exc:  # Flower raises ValueError, click or TOML errors for bad text
        raise ConfigError(f"cannot parse --run-config {overrides!r}: {' '.join(str(exc).split())}") from None


def read_run_config(overrides: str = "", app_dir: Path | None = None) -> RunConfig:
    """The run config a federation of this app would get, validated: what ``flwr run --run-config`` does first.

    The base is ``app_dir``'s ``[tool.flwr.app.config]`` when an app folder is given, else the
    packaged defaults (``RunConfig()``, the same values as the shipped table). ``overrides`` are
    parsed by Flower's parser, so ``"num-server-rounds=3 data-dir='/x'"`` means exactly what it
    means after ``flwr run --run-config``. Bad input raises a one-line ConfigError naming the key
    or the file. Keys naming federation plug-ins are checked by
    ``fedtumor.federation.settings.check_federation_keys``.
    """
    base = app_config_table(app_dir) if app_dir is not None else RunConfig().to_run_config()
    return load_run_config({**base, **parse_overrides(overrides)})


def fedtumor_home() -> Path:
    """Where cohorts, caches and default run folders live (``$FEDTUMOR_HOME``)."""
    return Path(os.environ.get("FEDTUMOR_HOME", Path.home() / ".cache" / "fedtumor")).expanduser().resolve()


def resolve_output_dir(config: RunConfig) -> Path:
    """Absolute output folder: the ServerApp's working directory is the SuperLink's."""
    if config.output_dir:
        return Path(config.output_dir).expanduser()
    return fedtumor_home() / "runs"
