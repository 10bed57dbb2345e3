"""Checks every train reply passes before any strategy may aggregate it.

:func:`checked_updates` is what the strategies run: for every reply the checks of
:func:`reply_problem` and the update's norm (:func:`update_norm`) in one pass over each
array's bytes (:func:`checked_update`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, Message

from fedtumor.federation.array_views import all_finite, array_view, squared_distance, squared_distances_to
from fedtumor.federation.wire import NUM_EXAMPLES_KEY


def _is_positive_integer(value: object) -> bool:
    """An int >= 1, or a float holding one (Flower's MetricRecord may carry counts as floats)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1
    return isinstance(value, float) and math.isfinite(value) and value.is_integer() and value >= 1


def reply_problem(message: Message, sent: ArrayRecord | None, extra_prefixes: tuple[str, ...] = ()) -> str | None:
    """Why a train reply must not be aggregated, or None when it is sound.

    Arrays must be a subset of the global model's, with the same shapes and dtypes (plus
    keys under ``extra_prefixes`` a strategy asked for), and finite; ``num-examples`` must
    be a positive integer.
    """
    problem = _content_problem(message)
    if problem is not None:
        return problem
    for key, array in next(iter(message.content.array_records.values())).items():
        problem = _array_problem(key, array, sent, extra_prefixes)
        if problem is not None:
            return problem
        if not all_finite(array):
            return _not_finite(key)
    return None


def _content_problem(message: Message) -> str | None:
    """Why the reply's records (one non-empty ArrayRecord, a positive ``num-examples``) are unusable."""
    content = message.content
    records = list(content.array_records.values())
    if len(records) != 1:
        return f"expected one ArrayRecord, got {len(records)}"
    if len(records[0]) == 0:
        return "the ArrayRecord holds no arrays"
    metrics = list(content.metric_records.values())
    if len(metrics) != 1 or NUM_EXAMPLES_KEY not in metrics[0]:
        return f"missing '{NUM_EXAMPLES_KEY}' in the reply's MetricRecord"
    weight = metrics[0][NUM_EXAMPLES_KEY]
    if not _is_positive_integer(weight):
        return f"'{NUM_EXAMPLES_KEY}' must be a positive integer, got {weight!r}"
    return None


def _array_problem(key: str, array: Array, sent: ArrayRecord | None, extra_prefixes: tuple[str, ...]) -> str | None:
    """Why one array does not fit the global model (key, shape, dtype); values are not read."""
    if sent is not None and key in sent:
        expected = sent[key]
        if tuple(array.shape) != tuple(expected.shape):
            return f"array {key!r} has shape {tuple(array.shape)}, the global model {tuple(expected.shape)}"
        if array.dtype != expected.dtype:
            return f"array {key!r} has dtype {array.dtype}, the global model {expected.dtype}"
    elif sent is not None and not key.startswith(extra_prefixes):
        return f"array {key!r} is not in the global model"
    return None


def _not_finite(key: str) -> str:
    return f"array {key!r} has NaN or Inf values"


def checked_updates(
    messages: Sequence[Message], sent: ArrayRecord | None, extra_prefixes: tuple[str, ...] = ()
) -> list[tuple[str | None, float | None]]:
    """:func:`checked_update` of every reply, the global model read once for all of them.

    The squared distances of all replies to each array of the global model are computed in
    one sweep (:func:`squared_distances_to`); the results are those of one reply at a time.
    """
    if sent is None:
        return [checked_update(message, None, extra_prefixes) for message in messages]
    candidates: dict[str, list[tuple[int, Array]]] = {}
    for index, message in enumerate(messages):
        if _content_problem(message) is not None:
            continue
        for key, array in next(iter(message.content.array_records.values())).items():
            if key in sent and _is_fast_float(array) and _array_problem(key, array, sent, extra_prefixes) is None:
                candidates.setdefault(key, []).append((index, array))
    known: list[dict[str, float]] = [{} for _ in messages]
    for key, pairs in candidates.items():
        for (index, _), squared in zip(pairs, squared_distances_to([array for _, array in pairs], sent[key])):
            known[index][key] = squared
    return [checked_update(message, sent, extra_prefixes, squared) for message, squared in zip(messages, known)]


def checked_update(
    message: Message,
    sent: ArrayRecord | None,
    extra_prefixes: tuple[str, ...] = (),
    known_squared: Mapping[str, float] | None = None,
) -> tuple[str | None, float | None]:
    """(:func:`reply_problem`, :func:`update_norm`): the same problem, and the norm of a sound reply.

    Each float array of the global model is read once: a finite squared distance to the
    global model proves its values finite, so only a non-finite one (a NaN or Inf, or an
    overflowing difference) is looked at again. Without a global model there is no norm.
    ``known_squared`` holds squared distances already computed, by key.
    """
    if sent is None:
        return reply_problem(message, None, extra_prefixes), None
    problem = _content_problem(message)
    if problem is not None:
        return problem, None
    total = 0.0
    for key, array in next(iter(message.content.array_records.values())).items():
        problem = _array_problem(key, array, sent, extra_prefixes)
        if problem is not None:
            return problem, None
        if key not in sent or not _is_fast_float(array):
            if not all_finite(array):
                return _not_finite(key), None
            total += _squared_update(array, sent[key]) if key in sent else 0.0
            continue
        squared = known_squared[key] if known_squared and key in known_squared else squared_distance(array, sent[key])
        if not math.isfinite(squared):
            if not all_finite(array):
                return _not_finite(key), None
            squared = _squared_update(array, sent[key])  # finite reply, overflowing difference
        total += squared
    return None, math.sqrt(total)


def _is_fast_float(array: Array) -> bool:
    return np.dtype(array.dtype) in (np.dtype(np.float32), np.dtype(np.float64))


def _squared_update(array: Array, reference: Array) -> float:
    """Squared L2 distance in float64 (0 for arrays that are not floating point)."""
    if not np.issubdtype(np.dtype(array.dtype), np.floating):
        return 0.0
    difference = array_view(array).astype(np.float64) - array_view(reference)
    return float(np.dot(difference.ravel(), difference.ravel()))


def update_norm(message: Message, sent: ArrayRecord) -> float:
    """L2 norm of (reply - global model) over the global model's floating-point arrays in a sound reply."""
    record = next(iter(message.content.array_records.values()))
    return math.sqrt(sum(_squared_update(array, sent[key]) for key, array in record.items() if key in sent))


def norm_problem(norm: float, bound: float) -> str | None:
    """Why an update is too long for the ``max-update-norm`` bound (0 = no bound), or None."""
    if bound > 0 and norm > bound:
        return f"update norm {norm:.4g} exceeds max-update-norm {bound:.4g}"
    return None
