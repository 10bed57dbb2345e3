"""The strategy registry: entry points, parameters, unknown names, broken plugins, hooks, complete builds."""

from importlib.metadata import EntryPoint, entry_points

import pytest
import torch
from flwr.app import ArrayRecord, RecordDict
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation import registry as registry_module
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.fets_hooks import largest_first
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.plugin import Parameter
from fedtumor.federation.privacy import ClientLevelDP
from fedtumor.federation.registry import (
    build_strategy,
    client_hooks_for,
    load_registry,
    parse_strategy_config,
    strategy_options,
)
from fedtumor.federation.strategy import FedTumorStrategy
from strategies.fedavg import FedAvg, FedAvgPlugin
from strategies.fedprox import FedProxClientHooks, FedProxPlugin
from tests import REPO

# The built-ins: every entry point fedtumor's own pyproject.toml registers (they live in strategies/).
BUILT_IN_ENTRY_POINTS = [ep for ep in entry_points(group="fedtumor.strategies") if ep.value.startswith("strategies.")]
BUILT_INS = sorted(ep.name for ep in BUILT_IN_ENTRY_POINTS)
# What build_strategy and the ServerApp once set on a strategy after building it.
ONCE_INJECTED = (
    "reply_listener",
    "site_profiles",
    "round_offset",
    "min_train_replies",
    "max_update_norm",
    "client_hook_name",
    "collaborator_selector",
    "round_hyperparameters",
    "selection_seed",
    "plugin_parameters",
)


def test_every_strategy_module_is_one_built_in_entry_point():
    modules = sorted(ep.value.split(":")[0] for ep in BUILT_IN_ENTRY_POINTS)
    files = sorted(f"strategies.{path.stem}" for path in (REPO / "strategies").glob("*.py") if path.stem != "__init__")
    assert modules == files


def test_built_ins_are_found_through_entry_points():
    registry = load_registry()
    assert set(BUILT_INS) <= set(registry.plugins) and len(BUILT_INS) == len(set(BUILT_INS))
    assert registry.broken == {}
    assert registry.plugins["fedavg"] is FedAvgPlugin


def test_unknown_strategy_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown strategy 'fedsgd'; available: .*fedavg.*fedprox"):
        build_strategy(RunConfig(strategy="fedsgd"))


def test_broken_plugin_is_reported_by_name_and_does_not_hide_others(monkeypatch):
    good = EntryPoint("fedavg", "strategies.fedavg:FedAvgPlugin", registry_module.ENTRY_POINT_GROUP)
    missing = EntryPoint("fedghost", "no_such_module:Plugin", registry_module.ENTRY_POINT_GROUP)
    misnamed = EntryPoint("fedother", "strategies.fedprox:FedProxPlugin", registry_module.ENTRY_POINT_GROUP)
    not_a_plugin = EntryPoint("fedjunk", "strategies.fedavg:FedAvg", registry_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [good, missing, misnamed, not_a_plugin])
    registry = load_registry()
    assert set(registry.plugins) == {"fedavg"}
    assert "ModuleNotFoundError" in registry.broken["fedghost"]
    assert "named 'fedprox'" in registry.broken["fedother"]
    assert "not a StrategyPlugin" in registry.broken["fedjunk"]
    with pytest.raises(ConfigError, match="'fedghost' failed to load: ModuleNotFoundError"):
        build_strategy(RunConfig(strategy="fedghost"), registry)


def test_strategy_config_is_validated_against_the_plugin():
    assert parse_strategy_config(FedProxPlugin, "") == {"proximal-mu": 0.01}
    assert parse_strategy_config(FedProxPlugin, "proximal-mu=1") == {"proximal-mu": 1.0}
    with pytest.raises(ConfigError, match="'mu' is not a parameter of fedprox \\(parameters: proximal-mu\\)"):
        parse_strategy_config(FedProxPlugin, "mu=0.1")
    with pytest.raises(ConfigError, match="'proximal-mu' of fedprox expects float, got str"):
        parse_strategy_config(FedProxPlugin, "proximal-mu='high'")
    with pytest.raises(ConfigError, match="strategy-config"):
        parse_strategy_config(FedProxPlugin, "proximal-mu")


def test_strategy_config_values_may_be_quoted_strings_and_a_bare_word_is_named():
    class Named(FedAvgPlugin):
        name = "named"
        parameters = {"label": Parameter("a", "a string"), "k": Parameter(1, "an int")}

    assert parse_strategy_config(Named, "label='two words' k=3") == {"label": "two words", "k": 3}
    with pytest.raises(ConfigError, match=r"^run-config key 'strategy-config': 'k' is not key=value"):
        parse_strategy_config(Named, "label='x' k")
    with pytest.raises(ConfigError, match=r"named: cannot parse the value of 'k': 'x=y'"):
        parse_strategy_config(Named, "k=x=y")


def test_built_strategy_uses_sampling_and_parameters():
    strategy = build_strategy(
        RunConfig(strategy="fedprox", strategy_config="proximal-mu=0.5", fraction_train=0.5, min_available_nodes=3)
    )
    assert strategy.proximal_mu == 0.5 and strategy.fraction_train == 0.5 and strategy.min_available_nodes == 3
    assert strategy.options.client_hook_name == "fedprox" and strategy.hook_config(1) == {"client-hook": "fedprox"}
    assert strategy.options.min_train_replies == 3  # min-train-replies 0: min-available-nodes
    plain = build_strategy(RunConfig())
    assert isinstance(plain, FedAvg) and plain.options.client_hook_name is None
    assert plain.hook_config(1) == {}


def test_options_come_from_the_run_config_and_the_serverapp():
    ledger = SiteLedger()
    config = RunConfig(
        seed=5,
        min_train_replies=2,
        max_update_norm=7.5,
        collaborator_selection="largest-first k=3",
        fraction_evaluate=0,
    )
    options = strategy_options(config, FedProxPlugin, ledger=ledger, round_offset=4)
    assert (options.seed, options.min_train_replies, options.max_update_norm) == (5, 2, 7.5)
    assert options.collaborator_selector == largest_first(3)
    assert options.round_hyperparameters is FedProxPlugin.round_hyperparameters  # the plugin's (constant)
    assert (options.client_hook_name, options.round_offset, options.ledger) == ("fedprox", 4, ledger)
    assert options.flower_kwargs()["min_evaluate_nodes"] == 0
    strategy = build_strategy(RunConfig(strategy="fedprox"), ledger=ledger, round_offset=4)
    assert strategy.ledger is ledger and strategy.options.round_offset == 4


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("collaborator-selection", "largest-first k=2.5", "'k' of largest-first expects int"),
        ("round-hyperparameters", "step-decay every=0", "step-decay: every must be an integer >= 1"),
    ],
)
def test_a_bad_fets_hook_spec_names_its_key_when_the_strategy_is_built(key, value, message):
    with pytest.raises(ConfigError, match=f"^run-config key '{key}': {message}"):
        build_strategy(RunConfig(**{key.replace("-", "_"): value}))


@pytest.mark.parametrize("name", BUILT_INS)
def test_each_built_in_is_complete_when_its_constructor_returns(name):
    """build_strategy is the plugin's build with the options, and nothing is set on the strategy afterwards."""
    config = RunConfig(strategy=name, seed=3, min_train_replies=2, max_update_norm=9.0, min_available_nodes=2)
    plugin = load_registry().get(name)
    options = strategy_options(config, plugin)
    by_hand = plugin().build(parse_strategy_config(plugin, ""), options)
    assert isinstance(by_hand, FedTumorStrategy) and by_hand.options is options
    built = build_strategy(config)
    assert built.options == options
    assert sorted(vars(built)) == sorted(vars(by_hand))  # no attribute added after construction
    assert [name for name in ONCE_INJECTED if hasattr(built, name)] == []
    assert built.min_available_nodes == 2  # the options' sampling reached Flower's strategy


def test_the_dp_wrapper_forwards_nothing_by_magic():
    for method in ("__getattr__", "__setattr__"):
        assert all(method not in vars(cls) for cls in ClientLevelDP.__mro__ if cls is not object), method


def test_a_strategy_built_by_hand_keeps_a_ledger_of_its_own():
    first, second = FedAvg(), FedAvg(options=StrategyOptions(min_available_nodes=1), min_available_nodes=4)
    assert first.ledger is not second.ledger
    assert second.min_available_nodes == 4  # explicit Flower arguments win over the options' sampling


def test_round_config_picks_the_client_hooks():
    assert type(client_hooks_for({}, RecordDict())) is ClientHooks
    assert type(client_hooks_for({"client-hook": "fedprox", "proximal-mu": 0.1}, RecordDict())) is FedProxClientHooks
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        client_hooks_for({"client-hook": "nope"}, RecordDict())


def test_fedprox_adds_half_mu_times_squared_distance_to_the_global_model():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    hooks = FedProxClientHooks({"proximal-mu": 0.5}, RecordDict())
    hooks.load_global(model, RecordDict({"arrays": ArrayRecord(model.state_dict())}))
    assert hooks.extra_loss(model).item() == 0.0
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.0]]))  # moved by (1, -2): squared distance 5
    assert hooks.extra_loss(model).item() == pytest.approx(0.5 * 0.5 * 5.0)
    assert FedProxClientHooks({"proximal-mu": 0.0}, RecordDict()).extra_loss(model) is None


def test_strategies_list_prints_every_plugin_with_parameters():
    result = CliRunner().invoke(app, ["strategies", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in BUILT_INS:
        assert name in result.output
    assert "proximal-mu=0.01" in result.output
