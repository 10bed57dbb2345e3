"""The kit's weighting check, its --strategy-config, and the sent-arrays accessor plugins read."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from typer.testing import CliRunner

import fedtumor.federation.conformance as kit
from fedtumor.cli import app
from fedtumor.federation.conformance.checks import HEAVY, LIGHT
from fedtumor.federation.plugin import FlowerStrategyPlugin
from fedtumor.federation.registry import Registry, load_registry
from fedtumor.federation.strategy import FedTumorStrategy
from fedtumor.federation.wire import ARRAYS_KEY

REGISTRY = load_registry()
WEIGHTING = "num-examples weighting"


class FlowerUnweightedMean(FlowerFedAvg):
    """What a plugin author wrote: FedAvg that forgot num-examples (a plain mean of the replies)."""

    def aggregate_train(self, server_round, replies):
        arrays = [reply.content[ARRAYS_KEY] for reply in replies]
        if not arrays:
            return None, None
        mean = {
            key: Array(np.mean([a[key].numpy() for a in arrays], axis=0).astype(arrays[0][key].dtype))
            for key in arrays[0]
        }
        return ArrayRecord(mean), None


class UnweightedMean(FedTumorStrategy, FlowerUnweightedMean):
    pass


class UnweightedPlugin(FlowerStrategyPlugin):
    name = "unweighted-fedavg"
    description = "FedAvg without the weights, claiming FedAvg's"
    strategy_class = UnweightedMean
    weighting = "num-examples"


class SilentUnweightedPlugin(UnweightedPlugin):
    name = "unweighted-silent"
    weighting = None


@functools.cache
def results(plugin) -> dict[str, kit.CheckResult]:
    return {result.name: result for result in kit.run_checks(plugin)}


def _check(plugin, strategy_config: str = "") -> kit.Outcome:
    harness = kit.Harness(plugin, Registry(plugins={plugin.name: plugin}), strategy_config)
    with kit.as_serverapp():
        return kit.CHECKS[WEIGHTING](harness)


def test_an_unweighted_fedavg_passes_every_structural_check_and_fails_the_weighting_one():
    got = results(UnweightedPlugin)
    failed = {name for name, result in got.items() if result.status == kit.FAIL}
    assert failed == {WEIGHTING}
    assert f"does not weigh as {HEAVY} sites of {LIGHT}" in got[WEIGHTING].reason


def test_without_the_declaration_the_kit_cannot_know_and_skips():
    outcome = _check(SilentUnweightedPlugin)
    assert outcome.status == kit.SKIP and "declares no weighting" in outcome.reason


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedavgm", "fedbn"])
def test_fedavg_style_builtins_declare_and_pass_the_weighted_mean(name):
    plugin = REGISTRY.get(name)
    assert plugin.weighting == "num-examples"
    with kit.as_serverapp():
        outcome = kit.CHECKS[WEIGHTING](kit.Harness(plugin, REGISTRY))
    assert outcome.status == kit.PASS, outcome.reason
    assert f"({LIGHT}A + {HEAVY}B)/{LIGHT + HEAVY}" in outcome.reason  # the mean itself, not just invariance


def test_strategy_config_reaches_the_strategy_under_test():
    fedavgm = REGISTRY.get("fedavgm")
    harness = kit.Harness(fedavgm, REGISTRY, "server-learning-rate=0.5")
    with kit.as_serverapp():
        assert harness.strategy()[0].server_learning_rate == 0.5
        # A half server step is still num-examples-weighted, but no longer the mean itself.
        outcome = kit.CHECKS[WEIGHTING](harness)
    assert outcome.status == kit.FAIL and "preserves_identical_updates = False" in outcome.reason
    assert f"weighs as {HEAVY} sites of {LIGHT}" not in outcome.reason


def test_cli_bad_strategy_config_is_one_line_naming_the_key():
    result = CliRunner().invoke(app, ["strategies", "check", "fedprox", "--strategy-config", "proximal-nu=1.0"])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--strategy-config" in lines[0] and "'proximal-nu'" in lines[0]


def test_sent_arrays_is_the_global_model_of_this_round():
    strategy, _ = kit.Harness(REGISTRY.get("fedavg"), REGISTRY).strategy()  # built as the ServerApp builds it
    assert strategy.sent_arrays is None  # nothing sent yet
    arrays = ArrayRecord({"w": Array(np.ones(3, np.float32))})
    with kit.as_serverapp():
        strategy.configure_train(1, arrays, ConfigRecord(), kit.FakeGrid([1, 2]))
    assert strategy.sent_arrays is arrays
