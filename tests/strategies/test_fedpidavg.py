"""FedPIDAvg against hand-computed weights."""

import logging

import numpy as np
from flwr.app import ConfigRecord

from fedtumor.federation.registry import parse_strategy_config
from strategies.fedpidavg import FedPIDAvg, FedPIDAvgPlugin
from tests.strategies.replies import OPTIONS, Grid, record, reply


# ---------------------------------------------------------------------- FedPIDAvg
def test_fedpidavg_weights_over_three_rounds_keyed_by_site():
    strategy = FedPIDAvgPlugin().build(parse_strategy_config(FedPIDAvgPlugin, "window=2"), OPTIONS)
    assert isinstance(strategy, FedPIDAvg)
    messages = list(strategy.configure_train(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    assert all(m.content["config"]["report-loss-before"] is True for m in messages)

    def aggregate(server_round, a, b, a_node=1, b_node=2):
        replies = [
            reply(a_node, {"w": [1.0, 0.0]}, site="a", num_examples=1, loss_before=a[0], loss=a[1]),
            reply(b_node, {"w": [0.0, 1.0]}, site="b", num_examples=3, loss_before=b[0], loss=b[1]),
        ]
        arrays, _ = strategy.aggregate_train(server_round, replies)
        return arrays["w"].numpy()

    # Round 1: P = (1/4, 3/4); drops 0.5, 0.1 -> D = (5/6, 1/6); losses 0.5, 0.7 -> I = (5/12, 7/12)
    w = aggregate(1, a=(1.0, 0.5), b=(0.8, 0.7))
    np.testing.assert_allclose(w, [0.45 / 4 + 0.45 * 5 / 6 + 0.1 * 5 / 12, 0.45 * 3 / 4 + 0.45 / 6 + 0.1 * 7 / 12])
    np.testing.assert_allclose(w, [0.5291667, 0.4708333], rtol=1e-6)

    # Round 2, nodes swapped (history follows the site id): b's loss rose -> D = (1, 0);
    # sums over the window: a 0.5 + 0.3 = 0.8, b 0.7 + 0.8 = 1.5 -> I = (0.8/2.3, 1.5/2.3)
    w = aggregate(2, a=(0.6, 0.3), b=(0.7, 0.8), a_node=2, b_node=1)
    np.testing.assert_allclose(w, [0.45 / 4 + 0.45 + 0.1 * 0.8 / 2.3, 0.45 * 3 / 4 + 0.1 * 1.5 / 2.3], rtol=1e-6)

    # Round 3: window 2 drops round 1; drops 0.2, 0.4 -> D = (1/3, 2/3);
    # sums: a 0.3 + 0.2 = 0.5, b 0.8 + 0.5 = 1.3 -> I = (0.5/1.8, 1.3/1.8)
    w = aggregate(3, a=(0.4, 0.2), b=(0.9, 0.5))
    np.testing.assert_allclose(w, [0.45 / 4 + 0.15 + 0.1 * 0.5 / 1.8, 0.45 * 3 / 4 + 0.3 + 0.1 * 1.3 / 1.8], rtol=1e-6)
    assert list(strategy.loss_history["a"]) == [0.3, 0.2] and list(strategy.loss_history["b"]) == [0.8, 0.5]


def test_fedpidavg_without_any_decrease_uses_data_shares_for_the_derivative(caplog):
    strategy = FedPIDAvgPlugin().build(parse_strategy_config(FedPIDAvgPlugin, ""), OPTIONS)
    replies = [
        reply(1, {"w": [1.0, 0.0]}, site="a", num_examples=1, loss_before=0.5, loss=0.5),
        reply(2, {"w": [0.0, 1.0]}, site="b", num_examples=3, loss_before=0.5, loss=0.5),
    ]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = strategy.aggregate_train(1, replies)
    # P = D = (1/4, 3/4), I = (1/2, 1/2): w_a = 0.9/4 + 0.05
    np.testing.assert_allclose(arrays["w"].numpy(), [0.9 / 4 + 0.05, 0.9 * 3 / 4 + 0.05], rtol=1e-6)
    assert "no cost decrease" in caplog.text
