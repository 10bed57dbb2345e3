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


# The fused pass the strategies run (checked_update) must reject exactly what reply_problem rejects.
UNSOUND = [
    ({**good_arrays(), "w": np.full((2, 3), np.nan, np.float32)}, None),
    ({**good_arrays(), "b": np.array([1.0, np.inf, 1.0], np.float32)}, None),
    ({**good_arrays(), "b": np.array([1.0, -np.inf, np.nan], np.float32)}, None),
    ({**good_arrays(), "b": np.ones(4, np.float32)}, None),
    ({**good_arrays(), "b": np.ones(3, np.float64)}, None),
    ({**good_arrays(), "extra": np.ones(1, np.float32)}, None),
    ({**good_arrays(), "control/w": np.full((2, 3), np.nan, np.float32)}, None),
    ({"b": np.ones(4, np.float32), "w": np.full((2, 3), np.nan, np.float32)}, None),  # the first key's problem
    ({"w": np.full((2, 3), np.nan, np.float32), "b": np.ones(4, np.float32)}, None),
    (good_arrays(), {"loss": 0.1}),
    (good_arrays(), {"num-examples": 0}),
    ({}, None),
]


@pytest.mark.parametrize(("arrays", "metrics"), UNSOUND)
def test_the_fused_check_rejects_what_reply_problem_rejects_with_the_same_reason(arrays, metrics):
    from fedtumor.federation.reply_checks import checked_update

    message = train_reply(arrays, metrics)
    expected = reply_problem(message, GLOBAL, extra_prefixes=("control/",))
    assert expected is not None
    assert checked_update(message, GLOBAL, extra_prefixes=("control/",)) == (expected, None)


def test_the_fused_check_gives_update_norms_norm_for_sound_replies():
    from fedtumor.federation.reply_checks import checked_update, update_norm

    rng = np.random.default_rng(0)
    sent = ArrayRecord(
        {
            "w": Array(rng.standard_normal((300, 700)).astype(np.float32)),  # several chunks
            "b": Array(rng.standard_normal(3).astype(np.float32)),
            "steps": Array(np.arange(4, dtype=np.int64)),
        }
    )
    arrays = {
        "w": sent["w"].numpy() + rng.standard_normal((300, 700)).astype(np.float32) * 1e-3,
        "b": np.zeros(3, np.float32),
        "steps": np.arange(4, dtype=np.int64) + 9,  # not floating point: no part of the norm
        "control/w": np.ones((300, 700), np.float32),
    }
    message = train_reply(arrays)
    problem, norm = checked_update(message, sent, extra_prefixes=("control/",))
    assert problem is None
    assert norm == pytest.approx(update_norm(message, sent), rel=1e-6)
    assert checked_update(message, None, extra_prefixes=("control/",)) == (None, None)  # no global model, no norm


def test_a_finite_reply_whose_difference_overflows_float32_is_sound_with_its_float64_norm():
    from fedtumor.federation.reply_checks import checked_update, update_norm

    big = np.finfo(np.float32).max
    sent = ArrayRecord({"w": Array(np.full(3, -big, np.float32))})
    message = train_reply({"w": np.full(3, big, np.float32)})
    problem, norm = checked_update(message, sent)
    assert problem is None and np.isfinite(norm)
    assert norm == update_norm(message, sent)


def test_all_replies_checked_together_give_what_each_checked_alone_gives():
    from fedtumor.federation.reply_checks import checked_update, checked_updates

    rng = np.random.default_rng(1)
    sent = ArrayRecord(
        {"w": Array(rng.standard_normal((300, 700)).astype(np.float32)), "b": Array(np.zeros(3, np.float32))}
    )
    sound = [
        train_reply({"w": sent["w"].numpy() + rng.standard_normal((300, 700)).astype(np.float32), "b": b})
        for b in (np.ones(3, np.float32), np.full(3, 2.0, np.float32))
    ]
    nan_w = np.full((300, 700), np.nan, np.float32)
    unsound = [
        train_reply({"w": nan_w, "b": np.ones(3, np.float32)}),
        train_reply({"w": sent["w"].numpy(), "b": np.array([1.0, np.inf, 1.0], np.float32)}),
        train_reply({"w": nan_w, "b": np.ones(4, np.float32)}),  # the first key's problem
        train_reply({"w": sent["w"].numpy()}, {"loss": 0.1}),
    ]
    messages = [sound[0], *unsound, sound[1]]
    together = checked_updates(messages, sent, extra_prefixes=("control/",))
    alone = [checked_update(message, sent, extra_prefixes=("control/",)) for message in messages]
    assert together == alone  # the same problems and bit-identical norms
    assert [problem is None for problem, _ in together] == [True, False, False, False, False, True]
    assert "'w' has NaN" in together[1][0] and "'b' has NaN" in together[2][0]
    assert together[0][1] != together[-1][1]
