"""The run config a federation would get: pyproject defaults plus ``--run-config`` overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedtumor.core.config import RunConfig, load_run_config
from fedtumor.core.errors import ConfigError

APP_DIR = Path(__file__).resolve().parents[2]


def app_run_config(overrides: str = "", app_dir: Path = APP_DIR) -> RunConfig:
    """``[tool.flwr.app.config]`` of ``app_dir/pyproject.toml`` with Flower-syntax overrides, validated.

    Overrides are parsed by Flower's own parser, so ``"num-server-rounds=3 data-dir='/x'"``
    means exactly what it means after ``flwr run --run-config``.
    """
    from flwr.common.config import parse_config_args  # Flower's parser; only this one function

    pyproject = Path(app_dir) / "pyproject.toml"
    try:
        with pyproject.open("rb") as handle:
            shipped = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise ConfigError(f"{pyproject}: no readable [tool.flwr.app.config] table ({type(exc).__name__})") from None
    try:
        changes = parse_config_args([overrides]) if overrides.strip() else {}
    except Exception as exc:  # Flower raises ValueError or TOML errors for bad text
        raise ConfigError(f"cannot parse --run-config {overrides!r}: {exc}") from None
    return load_run_config({**shipped, **changes})
