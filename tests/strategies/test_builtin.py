"""Every built-in registers like a plugin; the hand-checked ones preserve identical updates."""

from importlib.metadata import entry_points

import numpy as np
import pytest
from flwr.app import ConfigRecord
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.cli import console as cli_console
from fedtumor.core.errors import ConfigError
from fedtumor.federation.registry import load_registry, parse_strategy_config
from strategies.fedcostwavg import FedCostWAvgPlugin
from strategies.fedpidavg import FedPIDAvgPlugin
from strategies.scaffold import (
    ScaffoldPlugin,
)
from tests.strategies.replies import OPTIONS, Grid, record, reply

NEW = {"fedbn", "scaffold", "fedcostwavg", "fedpidavg"}  # the built-ins checked by hand in this folder


# ---------------------------------------------------------------------- registry
def test_built_in_strategies_are_registered_and_listed(monkeypatch):
    built_ins = {ep.name for ep in entry_points(group="fedtumor.strategies") if ep.value.startswith("strategies.")}
    registry = load_registry()
    assert NEW <= built_ins <= set(registry.plugins) and not registry.broken
    # The CLI's console reads COLUMNS when imported (80 under pytest-xdist): make the table wide enough.
    monkeypatch.setattr(cli_console, "_width", 200)
    result = CliRunner().invoke(app, ["strategies", "list"])
    assert result.exit_code == 0, result.output
    for name in built_ins:
        assert name in result.output
    assert "alpha=0.45 beta=0.45 gamma=0.1 window=5" in result.output


def test_parameters_are_checked_when_the_strategy_is_built():
    with pytest.raises(ConfigError, match="'alpha' must lie in"):
        FedCostWAvgPlugin().build(parse_strategy_config(FedCostWAvgPlugin, "alpha=1.5"), OPTIONS)
    with pytest.raises(ConfigError, match="'window' must be >= 1"):
        FedPIDAvgPlugin().build(parse_strategy_config(FedPIDAvgPlugin, "window=0"), OPTIONS)
    with pytest.raises(ConfigError, match="must be >= 0"):
        FedPIDAvgPlugin().build(parse_strategy_config(FedPIDAvgPlugin, "beta=-0.1"), OPTIONS)
    with pytest.raises(ConfigError, match="'server-learning-rate' must be > 0"):
        ScaffoldPlugin().build(parse_strategy_config(ScaffoldPlugin, "server-learning-rate=0"), OPTIONS)


@pytest.mark.parametrize("name", sorted(NEW))
def test_identical_updates_aggregate_to_that_update(name):
    plugin = load_registry().plugins[name]
    strategy = plugin().build(parse_strategy_config(plugin, ""), OPTIONS)
    list(strategy.configure_train(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    update = {"w": [2.0, -3.0]}
    replies = [
        reply(node, update, site=f"s{node}", num_examples=node, loss_before=0.9, loss=0.3 * node) for node in (1, 2)
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0, -3.0], rtol=1e-6)
