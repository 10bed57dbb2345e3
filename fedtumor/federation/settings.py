"""The run-config keys only the federation layer can check: the ones that name its plug-ins.

:class:`fedtumor.core.config.RunConfig` checks types, ranges and paths; whether
``collaborator-selection`` and ``round-hyperparameters`` name a built-in FeTS hook with valid
parameters, and whether ``fault-injection`` is a valid fault plan, needs this layer's parsers.
A strategy plugin may also require run-config values its method assumes, declared as the class
attribute ``required_run_config`` (key -> value), e.g. SCAFFOLD's ``{"optimizer": "sgd"}``.
Call :func:`check_federation_keys` wherever a federation's config is validated.
"""

from __future__ import annotations

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation.faults import parse_faults
from fedtumor.federation.fets_hooks import hyperparameters_from_spec, selector_from_spec
from fedtumor.federation.registry import Registry, load_registry


def check_federation_keys(config: RunConfig, registry: Registry | None = None) -> RunConfig:
    """``config`` unchanged when its plug-in specs parse and its strategy's requirements hold.

    Else a one-line ConfigError naming the key. ``registry`` defaults to the installed plugins.
    """
    specs = (
        ("collaborator-selection", config.collaborator_selection, selector_from_spec),
        ("round-hyperparameters", config.round_hyperparameters, hyperparameters_from_spec),
        ("fault-injection", config.fault_injection, parse_faults),
    )
    for key, text, parse in specs:
        try:
            parse(text)
        except ValueError as exc:
            raise ConfigError(f"run-config key '{key}': {exc}") from None
    check_strategy_requirements(config, registry)
    return config


def check_strategy_requirements(config: RunConfig, registry: Registry | None = None) -> None:
    """ConfigError naming the first key whose value the strategy's plugin refuses (its ``required_run_config``).

    An unknown strategy is left to the registry's own error when the strategy is built.
    """
    plugin = (registry or load_registry()).plugins.get(config.strategy)
    required = plugin.required_run_config if plugin is not None else {}
    values = config.to_run_config()
    for key, value in required.items():
        if values.get(key) != value:
            raise ConfigError(
                f"run-config key '{key}': strategy {config.strategy!r} requires {key}={value!r}, "
                f"got {values.get(key)!r}; set {key}={value!r}"
            )


def required_overrides(strategy: str, registry: Registry | None = None) -> str:
    """``--run-config`` text setting what ``strategy``'s plugin requires (e.g. ``"optimizer='sgd'"``); "" if nothing."""
    plugin = (registry or load_registry()).plugins.get(strategy)
    required = plugin.required_run_config if plugin is not None else {}
    return " ".join(f"{key}={value!r}" for key, value in required.items())
