"""Find strategy plugins by entry point, and build the one a run config names.

Built-ins and third-party plugins are found the same way: the entry-point group
``fedtumor.strategies``. A plugin that fails to import is reported by name and does not
hide the others. A strategy is built in one go: the plugin's ``build`` gets the validated
``strategy-config`` and the :class:`~fedtumor.federation.options.StrategyOptions` made from
the run config (:func:`strategy_options`), and nothing is set on the strategy afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from flwr.serverapp.strategy import Strategy

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.fets_hooks import hyperparameters_from_spec, selector_from_spec
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.params import ParameterValue, parse_params
from fedtumor.federation.plugin import StrategyPlugin
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
    defaults = {name: parameter.default for name, parameter in plugin.parameters.items()}
    try:
        return parse_params(text, defaults, owner=plugin.name)
    except ValueError as exc:
        raise ConfigError(f"run-config key 'strategy-config': {exc}") from None


def _hook_from_spec(key: str, text: str, parse: Callable[[str], Any], plugin_default: Any) -> Any:
    """The run config's built-in FeTS hook, else the plugin's; a bad spec names its run-config key."""
    try:
        return parse(text) or plugin_default
    except ValueError as exc:
        raise ConfigError(f"run-config key '{key}': {exc}") from None


def strategy_options(
    config: RunConfig, plugin: type[StrategyPlugin], *, ledger: SiteLedger | None = None, round_offset: int = 0
) -> StrategyOptions:
    """The settings ``plugin``'s strategy is built with in a run of ``config``.

    ``ledger`` is the run's (the ServerApp's); ``round_offset`` the rounds a resumed run has done.
    """
    return StrategyOptions(
        fraction_train=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        min_available_nodes=config.min_available_nodes,
        seed=config.seed,
        # Reliability (docs/reliability.md): a round needs this many sound updates; optional update-norm bound.
        min_train_replies=config.min_train_replies or config.min_available_nodes,
        node_wait_s=config.round_timeout_s,
        max_update_norm=config.max_update_norm,
        collaborator_selector=_hook_from_spec(
            "collaborator-selection", config.collaborator_selection, selector_from_spec, plugin.select_collaborators
        ),
        round_hyperparameters=_hook_from_spec(
            "round-hyperparameters",
            config.round_hyperparameters,
            hyperparameters_from_spec,
            plugin.round_hyperparameters,
        ),
        client_hook_name=plugin.name if plugin.client_hooks is not None else None,  # every round config names them
        round_offset=round_offset,
        ledger=ledger,
    )


def build_strategy(
    config: RunConfig, registry: Registry | None = None, *, ledger: SiteLedger | None = None, round_offset: int = 0
) -> Strategy:
    """The strategy named by run-config key ``strategy`` with its validated ``strategy-config``."""
    plugin = (registry or load_registry()).get(config.strategy)
    params = parse_strategy_config(plugin, config.strategy_config)
    return plugin().build(params, strategy_options(config, plugin, ledger=ledger, round_offset=round_offset))


def client_hooks_for(round_config: Mapping[str, Any], state, registry: Registry | None = None) -> ClientHooks:
    """The hooks a round's config asks for; plain training when it names none."""
    name = round_config.get(CLIENT_HOOK_KEY)
    if not name:
        return ClientHooks(round_config, state)
    plugin = (registry or load_registry()).get(str(name))
    hooks_class = plugin.client_hooks or ClientHooks
    return hooks_class(round_config, state)
