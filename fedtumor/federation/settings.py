"""The run-config keys only the federation layer can check: the ones that name its plug-ins.

:class:`fedtumor.core.config.RunConfig` checks types, ranges and paths; whether
``collaborator-selection`` and ``round-hyperparameters`` name a built-in FeTS hook with valid
parameters, and whether ``fault-injection`` is a valid fault plan, needs this layer's parsers.
Call :func:`check_federation_keys` wherever a federation's config is validated.
"""

from __future__ import annotations

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation.faults import parse_faults
from fedtumor.federation.fets_hooks import hyperparameters_from_spec, selector_from_spec


def check_federation_keys(config: RunConfig) -> RunConfig:
    """``config`` unchanged when its plug-in specs parse; else a one-line ConfigError naming the key."""
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
    return config
