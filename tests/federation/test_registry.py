"""The strategy registry: entry points, parameters, unknown names, broken plugins, hooks."""

from importlib.metadata import EntryPoint

import pytest
import torch
from flwr.app import ArrayRecord, RecordDict
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation import registry as registry_module
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.registry import build_strategy, client_hooks_for, load_registry, parse_strategy_config
from strategies.fedavg import FedAvg, FedAvgPlugin
from strategies.fedprox import FedProxClientHooks, FedProxPlugin

BUILT_INS = {"fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedmedian", "fedtrimmedavg", "krum"}


def test_built_ins_are_found_through_entry_points():
    registry = load_registry()
    assert BUILT_INS <= set(registry.plugins)
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


def test_built_strategy_uses_sampling_and_parameters():
    strategy = build_strategy(
        RunConfig(strategy="fedprox", strategy_config="proximal-mu=0.5", fraction_train=0.5, min_available_nodes=3)
    )
    assert strategy.proximal_mu == 0.5 and strategy.fraction_train == 0.5 and strategy.min_available_nodes == 3
    assert strategy.client_hook_name == "fedprox" and strategy.plugin_parameters == {"proximal-mu": 0.5}
    plain = build_strategy(RunConfig())
    assert isinstance(plain, FedAvg) and plain.client_hook_name is None
    assert plain.hook_config(1) == {}


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
