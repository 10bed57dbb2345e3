"""The conformance kit's checks: each a small function of a :class:`Harness` returning an :class:`Outcome`.

An exception inside a check is a failure whose reason names it (``report.run_checks``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict

from fedtumor.federation.conformance.harness import NUM_NODES, Harness, initial_model, numpy_arrays
from fedtumor.federation.registry import client_hooks_for
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CLIENT_HOOK_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    REPORT_LOSS_BEFORE_KEY,
)

PASS, FAIL, SKIP = "pass", "fail", "skip"
NUM_ROUNDS = 3
FAILED_CODE = 100  # the ClientApp's code for a site that could not train
RTOL, ATOL = 1e-5, 1e-6  # float32 sums in another order differ in the last bits
LIGHT, HEAVY = 1, 3  # the weighting check's num-examples: site B counts three times site A


# ------------------------------------------------------------------ comparing results
def _differences(a: ArrayRecord, b: ArrayRecord) -> list[str]:
    """Keys on which two aggregates differ beyond float tolerance (or exist in only one)."""
    a_np, b_np = numpy_arrays(a), numpy_arrays(b)
    problems = [f"{key!r} only in one" for key in sorted(set(a_np) ^ set(b_np))]
    for key in sorted(set(a_np) & set(b_np)):
        if a_np[key].shape != b_np[key].shape:
            problems.append(f"{key!r} shape {a_np[key].shape} vs {b_np[key].shape}")
        elif not np.allclose(a_np[key], b_np[key], rtol=RTOL, atol=ATOL, equal_nan=True):
            gap = float(np.max(np.abs(a_np[key].astype(np.float64) - b_np[key].astype(np.float64))))
            problems.append(f"{key!r} differs by up to {gap:.3g}")
    return problems


def _metric_differences(a: MetricRecord | None, b: MetricRecord | None) -> list[str]:
    a, b = dict(a or {}), dict(b or {})
    problems = [f"{key!r} only in one" for key in sorted(set(a) ^ set(b))]
    for key in sorted(set(a) & set(b)):
        if not np.allclose(np.asarray(a[key], float), np.asarray(b[key], float), rtol=RTOL, atol=ATOL):
            problems.append(f"{key!r}: {a[key]} vs {b[key]}")
    return problems


def _layout_problems(aggregate: ArrayRecord, sent: ArrayRecord) -> list[str]:
    """Why ``aggregate`` could not be the next global model: missing, extra, reshaped or retyped arrays."""
    problems = [f"missing {key!r}" for key in sent if key not in aggregate]
    problems += [f"extra {key!r}" for key in aggregate if key not in sent]
    for key in sent:
        if key in aggregate:
            got, expected = aggregate[key], sent[key]
            if tuple(got.shape) != tuple(expected.shape):
                problems.append(f"{key!r} has shape {tuple(got.shape)}, the model {tuple(expected.shape)}")
            if got.dtype != expected.dtype:
                problems.append(f"{key!r} has dtype {got.dtype}, the model {expected.dtype}")
    return problems


def _first(problems: list[str], limit: int = 3) -> str:
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


@dataclass(frozen=True)
class Outcome:
    status: str  # PASS, FAIL or SKIP
    reason: str


def _pass(reason: str) -> Outcome:
    return Outcome(PASS, reason)


def _fail(reason: str) -> Outcome:
    return Outcome(FAIL, reason)


# ------------------------------------------------------------------ the checks
def check_identical_updates(h: Harness) -> Outcome:
    """Every site sends the same model: the aggregate is that model (where the plugin promises it)."""
    if not h.plugin.preserves_identical_updates:
        return Outcome(SKIP, "the plugin declares preserves_identical_updates = False")
    messages, replies = h.trained_replies()
    if not replies:
        return _fail("round 1 trained no site")
    # The update every site sends: the global model after a few steps on site 1's patches.
    target = initial_model()
    target.load_state_dict(replies[0].content[ARRAYS_KEY].to_torch_state_dict(), strict=False)
    h.reset()  # fresh node state, so the hooks treat every site alike
    replies = [h.train_reply(m, target.state_dict()) for m in messages]
    sent = [numpy_arrays(r.content[ARRAYS_KEY]) for r in replies]
    shared = [key for key in sent[0] if key in h.global_arrays]
    if any(not np.array_equal(s[key], sent[0][key]) for s in sent[1:] for key in shared):
        return _fail("the client hooks turned one model into different replies")
    aggregate, _, _ = h.aggregate(replies)
    if aggregate is None:
        return _fail("aggregate_train returned no arrays")
    problems = [f"missing {key!r}" for key in shared if key not in aggregate]
    problems += _differences(
        ArrayRecord({k: aggregate[k] for k in shared if k in aggregate}),
        ArrayRecord({k: replies[0].content[ARRAYS_KEY][k] for k in shared if k in aggregate}),
    )
    if problems:
        return _fail(f"{len(replies)} identical updates aggregate to something else: {_first(problems)}")
    return _pass(f"{len(replies)} identical updates aggregate to that update ({len(shared)} arrays)")


def check_reply_order(h: Harness) -> Outcome:
    """The same replies in another order give the same model and metrics."""
    _, replies = h.trained_replies()
    if len(replies) < 3:
        return Outcome(SKIP, f"round 1 trains {len(replies)} of {NUM_NODES} sites; the check needs 3")
    forward, forward_metrics, _ = h.aggregate(replies)
    for label, order in {"reversed": replies[::-1], "rotated": replies[2:] + replies[:2]}.items():
        other, other_metrics, _ = h.aggregate(order)
        if (forward is None) != (other is None):
            return _fail(f"{label} order: aggregate_train returned arrays for one order only")
        if forward is not None and (problems := _differences(forward, other)):
            return _fail(f"{label} order changes the model: {_first(problems)}")
        if problems := _metric_differences(forward_metrics, other_metrics):
            return _fail(f"{label} order changes the metrics: {_first(problems)}")
    return _pass(f"{len(replies)} distinct replies in 3 orders give the same model and metrics")


def _as_reply(reply: Message, to: Message, arrays: ArrayRecord, num_examples: int) -> Message:
    """``reply`` answering ``to`` with ``arrays`` and ``num-examples``; its other metrics and site record kept."""
    content = RecordDict(dict(reply.content.items()))
    content[ARRAYS_KEY] = ArrayRecord({key: Array(value.numpy().copy()) for key, value in arrays.items()})
    content[METRICS_KEY] = MetricRecord({**dict(reply.content[METRICS_KEY]), NUM_EXAMPLES_KEY: num_examples})
    return Message(content, reply_to=to)


def _weighted_mean(a: ArrayRecord, b: ArrayRecord, keys: list[str]) -> ArrayRecord:
    """(LIGHT * a + HEAVY * b) / (LIGHT + HEAVY), in float64, back in each array's dtype."""
    out = {}
    for key in keys:
        x, y = a[key].numpy(), b[key].numpy()
        mean = (LIGHT * x.astype(np.float64) + HEAVY * y.astype(np.float64)) / (LIGHT + HEAVY)
        out[key] = Array(mean.astype(x.dtype))
    return ArrayRecord(out)


def check_weighting(h: Harness) -> Outcome:
    """A plugin declaring ``weighting = "num-examples"`` weights each update by its site's ``num-examples``.

    Two distinct trained models A and B with num-examples 1 and 3 must aggregate as A once and B
    three times from three sites of 1 each (any server step after the mean sees the same mean),
    and, where the plugin preserves identical updates (no server step), to (A + 3B) / 4 itself.
    """
    weighting = h.plugin.weighting
    if weighting is None:
        return Outcome(SKIP, "the plugin declares no weighting (set weighting = 'num-examples' for FedAvg's)")
    if weighting != NUM_EXAMPLES_KEY:
        return _fail(f"weighting {weighting!r} is unknown; the kit checks {NUM_EXAMPLES_KEY!r}")
    messages, replies = h.trained_replies()
    if len(replies) < 4:
        return Outcome(SKIP, f"round 1 trains {len(replies)} of {NUM_NODES} sites; the check needs 4")
    a, b = replies[0].content[ARRAYS_KEY], replies[1].content[ARRAYS_KEY]
    weighted, _, _ = h.aggregate(
        [_as_reply(replies[0], messages[0], a, LIGHT), _as_reply(replies[1], messages[1], b, HEAVY)]
    )
    split, _, _ = h.aggregate(
        [_as_reply(replies[0], messages[0], a, LIGHT)]
        + [_as_reply(replies[i], messages[i], b, LIGHT) for i in range(1, 1 + HEAVY)]
    )
    if weighted is None or split is None:
        return _fail("aggregate_train returned no arrays")
    if problems := _differences(weighted, split):
        return _fail(f"B with num-examples {HEAVY} does not weigh as {HEAVY} sites of {LIGHT}: {_first(problems)}")
    checked = [f"B with num-examples {HEAVY} weighs as {HEAVY} sites of {LIGHT}"]
    if h.plugin.preserves_identical_updates:
        keys = [k for k in a if k in b and k in h.global_arrays and k in weighted and a[k].numpy().dtype.kind == "f"]
        got = ArrayRecord({k: weighted[k] for k in keys})
        mean = f"({LIGHT}A + {HEAVY}B)/{LIGHT + HEAVY}"
        if problems := _differences(got, _weighted_mean(a, b, keys)):
            return _fail(
                f"A with num-examples {LIGHT} and B with {HEAVY} do not aggregate to {mean}: {_first(problems)} "
                "(an aggregate that is not the mean itself, e.g. after a server step, needs "
                "preserves_identical_updates = False)"
            )
        checked.append(f"A ({LIGHT}) and B ({HEAVY}) aggregate to {mean} ({len(keys)} arrays)")
    return _pass("; ".join(checked))


def check_dtypes_and_shapes(h: Harness) -> Outcome:
    """The aggregate has exactly the global model's arrays, shapes and dtypes: it is the next global model."""
    _, replies = h.trained_replies()
    aggregate, _, _ = h.aggregate(replies)
    if aggregate is None:
        return _fail("aggregate_train returned no arrays")
    if problems := _layout_problems(aggregate, h.global_arrays):
        return _fail(f"the aggregate is not laid out like the model sent: {_first(problems)}")
    dtypes = ", ".join(sorted({str(a.dtype) for a in aggregate.values()}))
    return _pass(f"{len(aggregate)} arrays keep their keys, shapes and dtypes ({dtypes})")


def corrupt_non_finite(arrays: ArrayRecord, key: str) -> ArrayRecord:
    values = arrays[key].numpy().copy()
    values.reshape(-1)[0] = np.nan
    values.reshape(-1)[-1] = np.inf
    return ArrayRecord({**dict(arrays.items()), key: Array(values)})


def corrupt_shape(arrays: ArrayRecord, key: str) -> ArrayRecord:
    values = arrays[key].numpy()
    return ArrayRecord({**dict(arrays.items()), key: Array(np.zeros((*values.shape, 2), dtype=values.dtype))})


def _check_rejection(h: Harness, corrupt: Callable[[ArrayRecord, str], ArrayRecord], what: str) -> Outcome:
    """One site's reply is corrupted: the aggregate must equal the one without it, the ledger told why."""
    messages, replies = h.trained_replies()
    if len(replies) < 3:
        return Outcome(SKIP, f"round 1 trains {len(replies)} of {NUM_NODES} sites; the check needs 3")
    arrays = replies[-1].content[ARRAYS_KEY]
    key = next((k for k in arrays if k in h.global_arrays), None)
    if key is None:
        return _fail("the site's reply holds none of the global model's arrays")
    content = RecordDict(dict(replies[-1].content.items()))
    content[ARRAYS_KEY] = corrupt(arrays, key)
    bad = Message(content, reply_to=messages[-1])
    good = replies[:-1]
    try:
        with_bad, _, events = h.aggregate([*good[:1], bad, *good[1:]])  # not first, not last
    except Exception as exc:
        return _fail(f"aggregating a reply with {what} raised {type(exc).__name__}: {exc}{h.mixin_hint()}")
    without_bad, _, _ = h.aggregate(good)
    node = bad.metadata.src_node_id
    rejected = [e.error for e in events if e.node_id == node and e.error and e.error.startswith("rejected:")]
    if with_bad is None or without_bad is None:
        return _fail("aggregate_train returned no arrays for the sound replies")
    if problems := _differences(with_bad, without_bad):
        return _fail(f"a reply with {what} changed the aggregate: {_first(problems)}{h.mixin_hint()}")
    if not rejected:
        return _fail(f"the run's ledger was not told 'rejected: ...' of the reply with {what}{h.mixin_hint()}")
    return _pass(f"reply with {what} in {key!r} left out; ledger told {rejected[0]!r}")


def check_rejects_non_finite(h: Harness) -> Outcome:
    """A reply holding NaN and Inf is left out (the aggregate is as without it) and reported as rejected."""
    return _check_rejection(h, corrupt_non_finite, "NaN and Inf")


def check_rejects_wrong_shape(h: Harness) -> Outcome:
    """A reply with an array of another shape is left out and reported as rejected."""
    return _check_rejection(h, corrupt_shape, "a wrong shape")


def check_failed_client(h: Harness) -> Outcome:
    """A site replying with an error does not stop the round: the others are aggregated, the error reported."""
    messages, replies = h.trained_replies()
    if len(replies) < 3:
        return Outcome(SKIP, f"round 1 trains {len(replies)} of {NUM_NODES} sites; the check needs 3")
    reason = "site 5: subject S5: S5_flair.nii.gz: truncated file (simulated)"
    failed = Message(Error(code=FAILED_CODE, reason=reason), reply_to=messages[-1])
    with_failure, _, events = h.aggregate([*replies[:-1], failed])
    without, _, _ = h.aggregate(replies[:-1])
    if with_failure is None:
        return _fail(f"no model from the round where {len(replies) - 1} of {len(replies)} sites replied")
    if problems := _differences(with_failure, without):
        return _fail(f"the failed site changed the aggregate: {_first(problems)}")
    if not any(e.node_id == failed.metadata.src_node_id and e.error == reason for e in events):
        return _fail(f"the run's ledger was not told of the failed site's error{h.mixin_hint()}")
    strategy, _ = h.strategy()  # federated evaluation goes on without it too
    evaluate = h.configure_evaluate(strategy, 1, with_failure)
    if len(evaluate) >= 2:
        eval_replies = [h.evaluate_reply(m) for m in evaluate[:-1]]
        eval_replies.append(Message(Error(code=FAILED_CODE, reason=reason), reply_to=evaluate[-1]))
        if strategy.aggregate_evaluate(1, eval_replies) is None:
            return _fail("aggregate_evaluate returned nothing when one site failed")
    return _pass(f"{len(replies) - 1} of {len(replies)} sites aggregated in train and evaluate; error reported")


def _hook_config_problem(h: Harness, server_round: int, phase: str, messages: list[Message]) -> str | None:
    """Why sites would not run the plugin's hooks on these messages, or None."""
    hooks_class = h.plugin.client_hooks
    if hooks_class is None:
        return None
    for message in messages:
        config = message.content[CONFIG_KEY]
        if config.get(CLIENT_HOOK_KEY) != h.plugin.name:
            return (
                f"round {server_round}: {phase} config has {CLIENT_HOOK_KEY}={config.get(CLIENT_HOOK_KEY)!r}, "
                f"not {h.plugin.name!r}: sites would not run the plugin's hooks"
            )
        hooks = client_hooks_for(config, RecordDict(), h.registry)
        if not isinstance(hooks, hooks_class):
            return f"round {server_round}: sites get {type(hooks).__name__}, not {hooks_class.__name__}"
    return None


def check_rounds_and_state(h: Harness) -> Outcome:
    """Three rounds of configure -> hooks on the sites -> aggregate: the model moves, node state lasts."""
    h.reset()
    strategy, ledger = h.strategy()
    arrays = h.global_arrays
    kept: dict[int, set[str]] = {}  # node -> state records after round 1
    asked_loss_before = False
    for server_round in range(1, NUM_ROUNDS + 1):
        messages = h.configure_train(strategy, server_round, arrays)
        if not messages:
            return _fail(f"round {server_round}: configure_train sent no messages")
        if problem := _hook_config_problem(h, server_round, "train", messages):
            return _fail(problem)
        asked_loss_before |= any(m.content[CONFIG_KEY].get(REPORT_LOSS_BEFORE_KEY, False) for m in messages)
        if server_round == NUM_ROUNDS:
            lost = {h.site(n).site_id: sorted(keys - set(h.site(n).state)) for n, keys in kept.items()}
            if any(lost.values()):
                return _fail(f"node state from round 1 gone by round {server_round}: {lost}")
        try:
            replies = [h.train_reply(m) for m in messages]
        except Exception as exc:
            return _fail(f"round {server_round}: a site failed on the train message: {type(exc).__name__}: {exc}")
        if server_round == 1:
            kept = {site.node_id: set(site.state) for site in h.sites if len(site.state)}
        new_arrays, _ = strategy.aggregate_train(server_round, replies)
        if rejected := [e.error for e in ledger.replies_of(server_round, "train") if e.error]:
            return _fail(f"round {server_round}: the strategy rejected its own sites' replies: {rejected[0]}")
        if new_arrays is None:
            return _fail(f"round {server_round}: aggregate_train returned no arrays")
        if problems := _layout_problems(new_arrays, arrays):
            return _fail(f"round {server_round}: the new global model is laid out differently: {_first(problems)}")
        before, after = numpy_arrays(arrays), numpy_arrays(new_arrays)
        if all(np.array_equal(before[key], after[key]) for key in before):
            return _fail(f"round {server_round}: the global model did not change")
        arrays = new_arrays
        evaluate = h.configure_evaluate(strategy, server_round, arrays)
        if problem := _hook_config_problem(h, server_round, "evaluate", evaluate):
            return _fail(problem)
        try:
            eval_replies = [h.evaluate_reply(m) for m in evaluate]
        except Exception as exc:
            return _fail(f"round {server_round}: a site failed on the evaluate message: {type(exc).__name__}: {exc}")
        if evaluate and strategy.aggregate_evaluate(server_round, eval_replies) is None:
            return _fail(f"round {server_round}: aggregate_evaluate returned nothing")
    notes = [f"{NUM_ROUNDS} rounds of train and evaluate, the model moved each round"]
    if h.plugin.client_hooks is not None:
        notes.append(f"{h.plugin.client_hooks.__name__} ran on every site")
    if asked_loss_before:
        notes.append("sites reported loss-before as asked")
    if kept:
        notes.append(f"node state {sorted(set().union(*kept.values()))} kept from round 1 to {NUM_ROUNDS}")
    else:
        notes.append("no node state used")
    return _pass("; ".join(notes))


CHECKS: dict[str, Callable[[Harness], Outcome]] = {
    "identical updates": check_identical_updates,
    "reply order": check_reply_order,
    "num-examples weighting": check_weighting,
    "dtypes and shapes": check_dtypes_and_shapes,
    "rejects NaN/Inf": check_rejects_non_finite,
    "rejects wrong shape": check_rejects_wrong_shape,
    "failed client": check_failed_client,
    "rounds and state": check_rounds_and_state,
}
