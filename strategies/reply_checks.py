"""Checks every train reply passes before any strategy may aggregate it."""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np
from flwr.app import Array, ArrayRecord, Message

WEIGHT_KEY = "num-examples"


def all_finite(array: Array) -> bool:
    """Whether a serialised float array holds only finite values, read in place (no copy).

    A float64 sum is NaN or Inf exactly when some element is (model weights never sum past
    1e308), and costs a fraction of deserialising the array.
    """
    if not np.issubdtype(np.dtype(array.dtype), np.floating):
        return True
    stream = BytesIO(array.data)
    major, _ = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    _, _, dtype = read_header(stream)
    values = np.frombuffer(array.data, dtype=dtype, offset=stream.tell())
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is the answer, not a problem
        return bool(np.isfinite(values.sum(dtype=np.float64)))


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
