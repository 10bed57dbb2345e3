"""FedCostWAvg against hand-computed weights."""

import logging

import numpy as np
import pytest
from flwr.app import ConfigRecord

from strategies.fedcostwavg import FedCostWAvg, FedCostWAvgPlugin
from tests.strategies.replies import OPTIONS, Grid, record, reply


# ---------------------------------------------------------------------- FedCostWAvg
def test_fedcostwavg_weights_data_share_and_cost_decrease_ratio():
    strategy = FedCostWAvgPlugin().build({"alpha": 0.5}, OPTIONS)
    assert isinstance(strategy, FedCostWAvg)
    messages = list(strategy.configure_train(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    assert all(m.content["config"]["report-loss-before"] is True for m in messages)
    assert all("client-hook" not in m.content["config"] for m in messages)  # no client hooks needed
    evaluate = list(strategy.configure_evaluate(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    assert all(m.content["config"]["report-loss-before"] is True for m in evaluate)
    replies = [
        reply(1, {"w": [0.0, 24.0]}, site="a", num_examples=1, loss_before=0.8, loss=0.4),  # k = 2
        reply(2, {"w": [24.0, 0.0]}, site="b", num_examples=3, loss_before=0.6, loss=0.6),  # k = 1
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    # w_a = 0.5 * 1/4 + 0.5 * 2/3 = 11/24, w_b = 0.5 * 3/4 + 0.5 * 1/3 = 13/24
    assert strategy.last_weights == {"a": pytest.approx(11 / 24), "b": pytest.approx(13 / 24)}
    np.testing.assert_allclose(arrays["w"].numpy(), [13.0, 11.0], rtol=1e-6)
    assert metrics["loss"] == pytest.approx(0.4 * 0.25 + 0.6 * 0.75)


def test_fedcostwavg_prefers_loss_after_on_the_same_patches():
    strategy = FedCostWAvgPlugin().build({"alpha": 0.0}, OPTIONS)
    replies = [
        # The running training loss says site a got worse; the same-patch loss says it halved.
        reply(1, {"w": [0.0, 3.0]}, site="a", num_examples=1, loss_before=0.8, loss=0.9, loss_after=0.4),  # k = 2
        reply(2, {"w": [3.0, 0.0]}, site="b", num_examples=1, loss_before=0.6, loss=0.5, loss_after=0.6),  # k = 1
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert strategy.last_weights == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    np.testing.assert_allclose(arrays["w"].numpy(), [1.0, 2.0], rtol=1e-6)


def test_fedcostwavg_with_alpha_one_is_fedavg():
    strategy = FedCostWAvgPlugin().build({"alpha": 1.0}, OPTIONS)
    replies = [
        reply(1, {"w": [0.0, 24.0]}, num_examples=1, loss_before=0.8, loss=0.4),
        reply(2, {"w": [24.0, 0.0]}, num_examples=3, loss_before=0.6, loss=0.6),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [18.0, 6.0])


def test_fedcostwavg_without_loss_before_falls_back_to_data_shares(caplog):
    strategy = FedCostWAvgPlugin().build({"alpha": 0.5}, OPTIONS)
    replies = [
        reply(1, {"w": [0.0, 24.0]}, num_examples=1, loss=0.4),
        reply(2, {"w": [24.0, 0.0]}, num_examples=3, loss=0.6),
    ]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [18.0, 6.0])
    assert "using data-share weights" in caplog.text
