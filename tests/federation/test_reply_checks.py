"""Replies are checked before any strategy aggregates them."""

import re

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedtumor.federation.conformance import site_reply
from fedtumor.federation.reply_checks import reply_problem

GLOBAL = ArrayRecord({"w": Array(np.zeros((2, 3), np.float32)), "b": Array(np.zeros(3, np.float32))})


def train_reply(arrays: dict, metrics: dict | None = None) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics if metrics is not None else {"num-examples": 4}),
        }
    )
    return site_reply(7, content)


def good_arrays() -> dict:
    return {"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}


def test_sound_reply_passes_and_a_subset_of_keys_is_allowed():
    assert reply_problem(train_reply(good_arrays()), GLOBAL) is None
    assert reply_problem(train_reply({"w": np.ones((2, 3), np.float32)}), GLOBAL) is None


@pytest.mark.parametrize(
    ("arrays", "metrics", "reason"),
    [
        ({**good_arrays(), "w": np.full((2, 3), np.nan, np.float32)}, None, "'w' has NaN or Inf"),
        ({**good_arrays(), "b": np.ones(4, np.float32)}, None, "'b' has shape \\(4,\\), the global model \\(3,\\)"),
        ({**good_arrays(), "b": np.ones(3, np.float64)}, None, "'b' has dtype float64"),
        ({**good_arrays(), "extra": np.ones(1, np.float32)}, None, "'extra' is not in the global model"),
        (good_arrays(), {"loss": 0.1}, "missing 'num-examples'"),
        (good_arrays(), {"num-examples": 0}, "positive integer, got 0"),
        (good_arrays(), {"num-examples": 2.5}, "positive integer, got 2.5"),
        (good_arrays(), {"num-examples": float("nan")}, "positive integer"),
        ({}, None, "holds no arrays"),
    ],
)
def test_unsound_replies_are_named(arrays, metrics, reason):
    problem = reply_problem(train_reply(arrays, metrics), GLOBAL)
    assert problem is not None
    assert re.search(reason, problem), problem


def test_extra_prefixes_allow_strategy_arrays():
    arrays = {**good_arrays(), "control/w": np.ones((2, 3), np.float32)}
    assert reply_problem(train_reply(arrays), GLOBAL, extra_prefixes=("control/",)) is None


def test_update_norm_is_the_length_of_reply_minus_global_and_the_bound_rejects_long_updates():
    from fedtumor.federation.reply_checks import norm_problem, update_norm

    reply = train_reply({"w": np.full((2, 3), 2.0, np.float32), "b": np.zeros(3, np.float32)})
    assert update_norm(reply, GLOBAL) == pytest.approx(np.sqrt(6 * 4.0))
    assert norm_problem(4.9, 5.0) is None and norm_problem(4.9, 0.0) is None
    assert norm_problem(5.1, 5.0) == "update norm 5.1 exceeds max-update-norm 5"
