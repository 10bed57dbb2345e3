"""Find strategy plugins by entry point, and build the one a run config names.

Built-ins and third-party plugins are found the same way: the entry-point group
``fedtumor.strategies``. A plugin that fails to import is reported by name and does not
hide the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from flwr.common.config import parse_config_args
from flwr.serverapp.strategy import Strategy

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.fets_hooks import hyperparameters_from_spec, selector_from_spec
from fedtumor.federation.plugin import ParameterValue, Sampling, StrategyPlugin
from fedtumor.federation.wire import CLIENT_HOOK_KEY

ENTRY_POINT_GROUP = "fedtumor.strategies"


@dataclass
class Registry:
    plugins: dict[str, type[StrategyPlugin]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # name -> why it failed to load

    def get(self, name: str) -> type[StrategyPlugin]:
        if name in self.plugins:
            return self.plugins[name]
        if name in self.broken:
            raise ConfigError(f"run-config key 'strategy': plugin {name!r} failed to load: {self.broken[name]}")
        available = ", ".join(sorted(self.plugins)) or "none"
        raise ConfigError(f"run-config key 'strategy': unknown strategy {name!r}; available: {available}")


def load_registry() -> Registry:
    """All installed plugins; import failures are recorded, not raised."""
    registry = Registry()
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = entry_point.load()
            if not (isinstance(plugin, type) and issubclass(plugin, StrategyPlugin)):
                raise TypeError(f"{entry_point.value} is not a StrategyPlugin subclass")
            if plugin.name != entry_point.name:
                raise ValueError(f"entry point {entry_point.name!r} loads a plugin named {plugin.name!r}")
        except Exception as exc:  # a broken plugin must not break the others
            registry.broken[entry_point.name] = f"{type(exc).__name__}: {exc}"
            continue
        registry.plugins[entry_point.name] = plugin
    return registry


def parse_strategy_config(plugin: type[StrategyPlugin], text: str) -> dict[str, ParameterValue]:
    """Validate ``strategy-config`` ("key=value key2=value2", TOML values) against the plugin."""
    try:
        given = parse_config_args([text]) if text.strip() else {}
    except Exception as exc:
        raise ConfigError(f"run-config key 'strategy-config': cannot parse {text!r} ({exc})") from None
    if text.strip() and not given:  # Flower's parser skips tokens without '='
        raise ConfigError(f"run-config key 'strategy-config': {text!r} holds no key=value pair")
    params = {name: parameter.default for name, parameter in plugin.parameters.items()}
    for key, value in given.items():
        if key not in plugin.parameters:
            known = ", ".join(plugin.parameters) or "none"
            raise ConfigError(
                f"run-config key 'strategy-config': {key!r} is not a parameter of {plugin.name} (parameters: {known})"
            )
        expected = plugin.parameters[key].type
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ConfigError(
                f"run-config key 'strategy-config': {key!r} of {plugin.name} expects {expected.__name__}, "
                f"got {type(value).__name__} {value!r}"
            )
        params[key] = value
    return params


def sampling_of(config: RunConfig) -> Sampling:
    return Sampling(
        fraction_train=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        min_available_nodes=config.min_available_nodes,
        seed=config.seed,
    )


def build_strategy(config: RunConfig, registry: Registry | None = None) -> Strategy:
    """The strategy named by run-config key ``strategy`` with its validated ``strategy-config``."""
    registry = registry or load_registry()
    plugin = registry.get(config.strategy)
    params = parse_strategy_config(plugin, config.strategy_config)
    strategy = plugin().build(params, sampling_of(config))
    strategy.plugin_parameters = params  # reported in summary.json
    if plugin.client_hooks is not None:
        strategy.client_hook_name = plugin.name  # every round's config names the hooks
    # FeTS Task 1 hooks: the run config's built-in, else the plugin's (defaults: all sites, constant).
    strategy.collaborator_selector = selector_from_spec(config.collaborator_selection) or plugin.select_collaborators
    strategy.round_hyperparameters = (
        hyperparameters_from_spec(config.round_hyperparameters) or plugin.round_hyperparameters
    )
    strategy.selection_seed = config.seed
    # Reliability (docs/reliability.md): a round needs this many sound updates; optional update-norm bound.
    strategy.min_train_replies = config.min_train_replies or config.min_available_nodes
    strategy.max_update_norm = config.max_update_norm
    return strategy


def client_hooks_for(round_config: Mapping[str, Any], state, registry: Registry | None = None) -> ClientHooks:
    """The hooks a round's config asks for; plain training when it names none."""
    name = round_config.get(CLIENT_HOOK_KEY)
    if not name:
        return ClientHooks(round_config, state)
    plugin = (registry or load_registry()).get(str(name))
    hooks_class = plugin.client_hooks or ClientHooks
    return hooks_class(round_config, state)
