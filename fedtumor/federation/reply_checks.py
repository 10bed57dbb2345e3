"""Checks every train reply passes before any strategy may aggregate it."""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, Message

from fedtumor.federation.array_views import all_finite, array_view
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
    for key, array in records[0].items():
        if sent is not None and key in sent:
            expected = sent[key]
            if tuple(array.shape) != tuple(expected.shape):
                return f"array {key!r} has shape {tuple(array.shape)}, the global model {tuple(expected.shape)}"
            if array.dtype != expected.dtype:
                return f"array {key!r} has dtype {array.dtype}, the global model {expected.dtype}"
        elif sent is not None and not key.startswith(extra_prefixes):
            return f"array {key!r} is not in the global model"
        if not all_finite(array):
            return f"array {key!r} has NaN or Inf values"
    return None


def update_norm(message: Message, sent: ArrayRecord) -> float:
    """L2 norm of (reply - global model) over the global model's floating-point arrays in a sound reply."""
    record = next(iter(message.content.array_records.values()))
    total = 0.0
    for key, array in record.items():
        if key not in sent or not np.issubdtype(np.dtype(array.dtype), np.floating):
            continue
        difference = array_view(array).astype(np.float64) - array_view(sent[key])
        total += float(np.dot(difference.ravel(), difference.ravel()))
    return math.sqrt(total)


def norm_problem(norm: float, bound: float) -> str | None:
    """Why an update is too long for the ``max-update-norm`` bound (0 = no bound), or None."""
    if bound > 0 and norm > bound:
        return f"update norm {norm:.4g} exceeds max-update-norm {bound:.4g}"
    return None
