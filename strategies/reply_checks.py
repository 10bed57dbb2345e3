"""Checks every train reply passes before any strategy may aggregate it."""

from __future__ import annotations

import math

from flwr.app import ArrayRecord, Message

from strategies.array_views import all_finite

WEIGHT_KEY = "num-examples"


def reply_problem(message: Message, sent: ArrayRecord | None, extra_prefixes: tuple[str, ...] = ()) -> str | None:
    """Why a train reply must not be aggregated, or None when it is sound.

    Arrays must be a subset of the global model's, with the same shapes and dtypes (plus
    keys under ``extra_prefixes`` a strategy asked for), and finite; ``num-examples`` must
    be a positive number.
    """
    content = message.content
    records = list(content.array_records.values())
    if len(records) != 1:
        return f"expected one ArrayRecord, got {len(records)}"
    metrics = list(content.metric_records.values())
    if len(metrics) != 1 or WEIGHT_KEY not in metrics[0]:
        return f"missing '{WEIGHT_KEY}' in the reply's MetricRecord"
    weight = metrics[0][WEIGHT_KEY]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        return f"'{WEIGHT_KEY}' must be a positive number, got {weight!r}"
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
