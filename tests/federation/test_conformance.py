"""The conformance kit: every built-in passes it, and broken plugins fail the check they break."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.supercore.task_identity import TaskIdentity
from typer.testing import CliRunner

import fedtumor.federation.conformance as kit
from fedtumor.cli import app
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.conformance import report
from fedtumor.federation.conformance.checks import corrupt_non_finite, corrupt_shape
from fedtumor.federation.plugin import FlowerStrategyPlugin
from fedtumor.federation.registry import Registry, load_registry
from fedtumor.federation.wire import ARRAYS_KEY
from strategies.fedavg import FedAvg

REGISTRY = load_registry()


@functools.cache
def statuses(plugin, installed: bool = False) -> dict[str, kit.CheckResult]:
    """The kit's results by check name (each plugin runs through the kit once per session)."""
    return {result.name: result for result in kit.run_checks(plugin, REGISTRY if installed else None)}


# ------------------------------------------------------------------ every installed plugin
@pytest.mark.parametrize("name", sorted(REGISTRY.plugins))
def test_builtin_strategy_conforms(name):
    plugin = REGISTRY.get(name)
    results = list(statuses(plugin, installed=True).values())
    assert [r.name for r in results] == list(kit.CHECKS)
    failed = [f"{r.name}: {r.reason}" for r in results if r.status != kit.PASS and r.status != kit.SKIP]
    assert failed == []
    # Only the identical-update and weighting checks may be skipped, and only when the plugin says so.
    skipped = {r.name for r in results if r.status == kit.SKIP}
    expected = set() if plugin.preserves_identical_updates else {"identical updates"}
    assert skipped == expected | (set() if plugin.weighting else {"num-examples weighting"})


def test_the_four_new_builtins_and_their_state_are_exercised():
    """FedBN and SCAFFOLD keep node state between rounds; FedCostWAvg/FedPIDAvg ask for loss-before."""
    for name, fragment in [
        ("fedbn", "node state ['fedbn-local-norms'] kept"),
        ("scaffold", "node state ['scaffold-local-control'] kept"),
        ("fedcostwavg", "sites reported loss-before"),
        ("fedpidavg", "sites reported loss-before"),
    ]:
        if name not in REGISTRY.plugins:
            pytest.skip(f"{name} is not installed")
        rounds = statuses(REGISTRY.get(name), installed=True)["rounds and state"]
        assert rounds.status == kit.PASS and fragment in rounds.reason, (name, rounds.reason)


# ------------------------------------------------------------------ the harness itself
def test_harness_fedavg_round_is_the_hand_computed_weighted_mean():
    harness = kit.Harness(REGISTRY.get("fedavg"), REGISTRY)
    with kit.as_serverapp():
        messages, replies = harness.trained_replies()
        aggregate, metrics, events = harness.aggregate(replies)
    assert [m.metadata.dst_node_id for m in messages] == [101, 102, 103, 104, 105]
    weights = [r.content["metrics"]["num-examples"] for r in replies]
    assert weights == [2, 3, 4, 5, 6]
    # The sites trained to different models, so the order check compares something.
    first, second = (r.content[ARRAYS_KEY]["conv.weight"].numpy() for r in replies[:2])
    assert not np.allclose(first, second)
    for key in ("conv.weight", "norm.bias"):
        expected = sum(w * r.content[ARRAYS_KEY][key].numpy() for w, r in zip(weights, replies)) / 20
        assert np.allclose(aggregate[key].numpy(), expected, rtol=1e-6, atol=1e-7)
    losses = [r.content["metrics"]["loss"] for r in replies]
    assert metrics["loss"] == pytest.approx(sum(w * x for w, x in zip(weights, losses)) / 20)
    assert [e.site_id for e in events] == ["site-1", "site-2", "site-3", "site-4", "site-5"]


def test_harness_sites_train_and_report_loss_before_only_when_asked():
    harness = kit.Harness(REGISTRY.get("fedavg"), REGISTRY)
    with kit.as_serverapp():
        strategy, _ = harness.strategy()
        message = harness.configure_train(strategy, 1, harness.global_arrays)[0]
        plain = harness.train_reply(message)
        message.content["config"] = ConfigRecord({**message.content["config"], "report-loss-before": True})
        asked = harness.train_reply(message)
    assert "loss-before" not in plain.content["metrics"]
    metrics = asked.content["metrics"]
    assert set(metrics) == {"loss", "loss-before", "num-examples", "num-patches", "train-seconds"}
    assert metrics["loss"] < metrics["loss-before"]  # three Adam steps on learnable targets
    assert asked.content["site"]["site-id"] == "site-1"


# ------------------------------------------------------------------ broken plugins fail
class FirstReplyWins(FedAvg):
    def aggregate_train(self, server_round, replies):
        return super().aggregate_train(server_round, list(replies)[:1])


class OrderDependentPlugin(FlowerStrategyPlugin):
    name = "broken-order"
    description = "keeps only the first reply"
    strategy_class = FirstReplyWins


class Float64Average(FedAvg):
    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        return ArrayRecord({k: Array(v.numpy().astype(np.float64)) for k, v in arrays.items()}), metrics


class Float64Plugin(FlowerStrategyPlugin):
    name = "broken-dtype"
    description = "returns float64"
    strategy_class = Float64Average


class NoChecksPlugin(FlowerStrategyPlugin):
    name = "broken-no-mixin"
    description = "Flower's FedAvg without fedtumor's reply checks"
    strategy_class = FlowerFedAvg


class HalfStep(FedAvg):
    """Moves only halfway to the average but claims to preserve identical updates."""

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        old = self.sent_arrays
        return ArrayRecord({k: Array((v.numpy() + old[k].numpy()) / 2) for k, v in arrays.items()}), metrics


class HalfStepPlugin(FlowerStrategyPlugin):
    name = "broken-half-step"
    description = "half a step"
    strategy_class = HalfStep


class FrozenModel(FedAvg):
    def aggregate_train(self, server_round, replies):
        _, metrics = super().aggregate_train(server_round, replies)
        return self.sent_arrays, metrics


class FrozenPlugin(FlowerStrategyPlugin):
    name = "broken-frozen"
    description = "never moves the model"
    strategy_class = FrozenModel
    preserves_identical_updates = False


class NeedsControlHooks(ClientHooks):
    """Needs an ArrayRecord the strategy never sends."""

    def load_global(self, model, content):
        super().load_global(model, content)
        self.control = content["my-control"]


class MissingContentPlugin(FlowerStrategyPlugin):
    name = "broken-missing-content"
    description = "hooks need content the server does not send"
    strategy_class = FedAvg
    client_hooks = NeedsControlHooks


class ForgetfulHooks(ClientHooks):
    """Keeps only this round's record in the node state: round 1's is gone by round 3."""

    def reply_arrays(self, model, num_steps, learning_rate):
        for key in list(self.state):
            del self.state[key]
        self.state[f"round-{self.round_config['server-round']}"] = ConfigRecord({"steps": num_steps})
        return super().reply_arrays(model, num_steps, learning_rate)


class ForgetfulPlugin(FlowerStrategyPlugin):
    name = "broken-forgetful"
    description = "node state does not last"
    strategy_class = FedAvg
    client_hooks = ForgetfulHooks


@pytest.mark.parametrize(
    ("plugin", "check", "fragment"),
    [
        (OrderDependentPlugin, "reply order", "reversed order changes the model"),
        (Float64Plugin, "dtypes and shapes", "has dtype float64, the model float32"),
        (Float64Plugin, "rounds and state", "round 1: the new global model is laid out differently"),
        (NoChecksPlugin, "rejects NaN/Inf", "put FedTumorStrategy first in its bases"),
        (NoChecksPlugin, "rejects wrong shape", "put FedTumorStrategy first in its bases"),
        (NoChecksPlugin, "failed client", "not told of the failed site's error"),
        (HalfStepPlugin, "identical updates", "5 identical updates aggregate to something else"),
        (FrozenPlugin, "rounds and state", "round 1: the global model did not change"),
        (MissingContentPlugin, "rounds and state", "a site failed on the train message: KeyError"),
        (ForgetfulPlugin, "rounds and state", "node state from round 1 gone by round 3"),
    ],
)
def test_broken_plugin_fails_the_check_it_breaks(plugin, check, fragment):
    result = statuses(plugin)[check]
    assert result.status == kit.FAIL
    assert fragment in result.reason


def test_assert_conforms_lists_the_failed_checks_and_passes_a_good_plugin():
    with pytest.raises(AssertionError) as raised:
        kit.assert_conforms(NoChecksPlugin)
    lines = str(raised.value).splitlines()
    assert lines[0] == "strategy plugin 'broken-no-mixin' fails the conformance kit:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "rejects NaN/Inf",
        "rejects wrong shape",
        "failed client",
    ]
    kit.assert_conforms(REGISTRY.get("fedavg"))  # no exception


def test_broken_plugin_passes_the_checks_it_does_not_break():
    results = statuses(OrderDependentPlugin)
    assert results["dtypes and shapes"].status == kit.PASS
    assert results["identical updates"].status == kit.PASS  # every reply is the same, so first == all
    frozen = statuses(FrozenPlugin)
    assert frozen["identical updates"].status == kit.SKIP
    assert frozen["dtypes and shapes"].status == kit.PASS


def test_state_that_lasts_is_reported():
    class CountingHooks(ClientHooks):
        def reply_arrays(self, model, num_steps, learning_rate):
            record = self.state.get("count", ConfigRecord({"rounds": 0}))
            self.state["count"] = ConfigRecord({"rounds": int(record["rounds"]) + 1})
            return super().reply_arrays(model, num_steps, learning_rate)

    class CountingPlugin(FlowerStrategyPlugin):
        name = "counting"
        description = "counts rounds in node state"
        strategy_class = FedAvg
        client_hooks = CountingHooks

    harness = kit.Harness(CountingPlugin, Registry(plugins={"counting": CountingPlugin}))
    with kit.as_serverapp():
        outcome = kit.check_rounds_and_state(harness)
    assert outcome.status == kit.PASS
    assert "CountingHooks ran on every site; node state ['count'] kept from round 1 to 3" in outcome.reason
    # Every site trained in each of the 3 rounds, and the count survived serialisation between them.
    assert [site.state["count"]["rounds"] for site in harness.sites] == [3, 3, 3, 3, 3]


def test_kit_leaves_the_process_as_found():
    identity = TaskIdentity
    before = (identity._task_id, identity._run_id, identity._node_id, torch.get_num_threads())
    torch.manual_seed(7)
    random.seed(7)
    expected = (torch.rand(1), random.random())
    torch.manual_seed(7)
    random.seed(7)
    kit.run_checks(REGISTRY.get("fedavg"), REGISTRY)
    assert (torch.rand(1), random.random()) == expected
    assert (identity._task_id, identity._run_id, identity._node_id, torch.get_num_threads()) == before


# ------------------------------------------------------------------ command line
def test_cli_check_passes_with_a_table():
    result = CliRunner().invoke(app, ["strategies", "check", "fedprox", "--strategy-config", "proximal-mu=0.5"])
    assert result.exit_code == 0, result.output
    assert "with 'proximal-mu=0.5'" in result.output  # checked at the parameters asked for
    for name in kit.CHECKS:
        assert name in result.output
    assert "fedprox: conforms" in result.output


def test_cli_check_failure_exits_1(monkeypatch):
    monkeypatch.setattr(report, "load_registry", lambda: Registry(plugins={"broken-order": OrderDependentPlugin}))
    result = CliRunner().invoke(app, ["strategies", "check", "broken-order"])
    assert result.exit_code == 1
    assert "FAILED: reply order" in result.output


def test_cli_check_unknown_name_is_one_line_exit_2():
    result = CliRunner().invoke(app, ["strategies", "check", "fedmagic"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown strategy 'fedmagic'" in lines[0] and "fedavg" in lines[0]


def test_corruptions_hit_one_array_and_keep_the_rest():
    arrays = ArrayRecord({"a": Array(np.ones((2, 3), np.float32)), "b": Array(np.zeros(4, np.float32))})
    non_finite = corrupt_non_finite(arrays, "a")["a"].numpy().reshape(-1)
    assert np.isnan(non_finite[0]) and np.isinf(non_finite[-1]) and (non_finite[1:-1] == 1).all()
    reshaped = corrupt_shape(arrays, "a")
    assert reshaped["a"].shape == (2, 3, 2) and reshaped["a"].dtype == "float32"
    assert np.array_equal(reshaped["b"].numpy(), np.zeros(4)) and arrays["a"].shape == (2, 3)
