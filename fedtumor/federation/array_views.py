"""Read Flower's serialised arrays in place, without the copy `Array.numpy()` makes.

A reply from a FeTS-sized model is tens of MB per site; aggregating 71 of them is dominated
by deserialising. A read-only view over the message's bytes costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord


def array_view(array: Array) -> np.ndarray:
    """A read-only NumPy view of ``array``'s data (``np.save`` format), in its shape and order.

    The ``Array`` already knows dtype and shape, so the data is the last ``nbytes`` of the
    buffer; only the memory order is read from the (short, ASCII) ``.npy`` header.
    """
    data = array.data
    dtype = np.dtype(array.dtype)
    shape = tuple(array.shape)
    offset = len(data) - dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if offset < 10 or data[:6] != b"\x93NUMPY":
        raise ValueError(f"not an .npy buffer of {dtype} {shape}")
    fortran_order = b"'fortran_order': True" in data[:offset]
    flat = np.frombuffer(data, dtype=dtype, offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C")


def all_finite(array: Array) -> bool:
    """Whether a serialised float array holds only finite values.

    A float64 sum is NaN or Inf exactly when some element is (model weights never sum past
    1e308), and costs a fraction of deserialising the array.
    """
    if not np.issubdtype(np.dtype(array.dtype), np.floating):
        return True
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is the answer, not a problem
        return bool(np.isfinite(array_view(array).sum(dtype=np.float64)))


def weighted_sum(records: Sequence[ArrayRecord], key: str, weights: Sequence[float]) -> np.ndarray:
    """``sum_i w_i a_i`` of one key over replies, read in place and accumulated in one buffer.

    Python float weights keep float32 arrays float32; integer arrays come back as float64.
    """
    total = array_view(records[0][key]) * weights[0]
    scratch = np.empty_like(total)
    for weight, record in zip(weights[1:], records[1:]):
        np.multiply(array_view(record[key]), weight, out=scratch, casting="unsafe")
        total += scratch
    return total


# Elements per chunk of a fused pass: 256 KiB of float32, so the difference stays in L2 cache.
_PASS_CHUNK = 1 << 16


def squared_distance(array: Array, reference: Array) -> float:
    """``sum((array - reference)^2)`` over two serialised float arrays of one shape and dtype, in one pass.

    Computed in the arrays' dtype a chunk at a time (float32 rounding, relative error about
    1e-7) and summed over chunks in float64. NaN or Inf when either array has a NaN or Inf
    value, or when the difference overflows its dtype.
    """
    values, base = np.ravel(array_view(array)), np.ravel(array_view(reference))
    scratch = np.empty(min(values.size, _PASS_CHUNK), values.dtype)
    total = 0.0
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite total is the answer
        for start in range(0, values.size, _PASS_CHUNK):
            stop = min(values.size, start + _PASS_CHUNK)
            difference = np.subtract(values[start:stop], base[start:stop], out=scratch[: stop - start])
            total += float(np.dot(difference, difference))
    return total
