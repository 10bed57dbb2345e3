"""Read Flower's serialised arrays in place, without the copy `Array.numpy()` makes.

A reply from a FeTS-sized model is tens of MB per site; aggregating 71 of them is dominated
by deserialising. A read-only view over the message's bytes costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

# Elements per chunk of a pass: 256 KiB of float32, so a chunk stays in L2 cache.
_PASS_CHUNK = 1 << 16


def array_view(array: Array) -> np.ndarray:
    """A read-only NumPy view of ``array``'s data (``np.save`` format), in its shape and order.

    The ``Array`` already knows dtype and shape, so the data is the last ``nbytes`` of the
    buffer; only the memory order is read from the (short, ASCII) ``.npy`` header.
    """
    data = array.data
    dtype = np.dtype(array.dtype)
    shape = tuple(array.shape)
    offset = len(data) - dtype.itemsize * math.prod(shape)
    if offset < 10 or data[:6] != b"\x93NUMPY":
        raise ValueError(f"not an .npy buffer of {dtype} {shape}")
    fortran_order = b"'fortran_order': True" in data[:offset]
    flat = np.frombuffer(data, dtype=dtype, offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C")


def all_finite(array: Array) -> bool:
    """Whether a serialised float array holds only finite values.

    For float32 and float64 one BLAS dot product of the array with itself decides it: the
    squares are never negative, so a NaN or Inf value makes the sum NaN or Inf, and a finite
    sum proves every value finite. Only a non-finite sum (a NaN or Inf, or finite values so
    large that their squares overflow) is checked value by value. Other float dtypes: a
    float64 sum (model weights never sum past 1e308).
    """
    dtype = np.dtype(array.dtype)
    if not np.issubdtype(dtype, np.floating):
        return True
    values = np.ravel(array_view(array))
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite total is the answer
        if dtype in (np.dtype(np.float32), np.dtype(np.float64)):
            return math.isfinite(float(np.dot(values, values))) or bool(np.isfinite(values).all())
        return bool(np.isfinite(values.sum(dtype=np.float64)))


def weighted_sum(records: Sequence[ArrayRecord], key: str, weights: Sequence[float]) -> np.ndarray:
    """``sum_i w_i a_i`` of one key over replies, read in place (:func:`weighted_total`).

    Python float weights keep float32 arrays float32; integer arrays come back as float64.
    """
    return weighted_total([array_view(record[key]) for record in records], weights)


def weighted_total(values: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``values[0] * weights[0]``, then ``+= values[i] * weights[i]`` in order: Flower's FedAvg sum.

    Element for element the same floats, in the same order, as Flower's
    ``total = a_1 * w_1; total += a_i * w_i``, but computed a chunk of the total at a time
    with every reply adding to it while it sits in cache: each reply's bytes are read once
    and the total is written once, where the array-at-a-time sum reads and writes the whole
    total once per reply. Arrays must share one shape; the total is C-ordered.

    Example::

        >>> weighted_total([np.ones(3, np.float32), np.full(3, 3, np.float32)], [0.5, 0.5])
        array([2., 2., 2.], dtype=float32)
    """
    if not values or len(values) != len(weights):
        raise ValueError(f"need one weight per array, got {len(values)} arrays and {len(weights)} weights")
    shape = values[0].shape
    if any(value.shape != shape for value in values):
        raise ValueError(f"arrays of different shapes: {sorted({value.shape for value in values})}")
    flats = [np.ravel(value) for value in values]  # a view for C-ordered arrays (Flower's serialised tensors)
    total = np.empty(flats[0].size, (flats[0][:1] * weights[0]).dtype)
    scratch = np.empty(min(total.size, _PASS_CHUNK), total.dtype)
    # A reply in another dtype adds its product in that dtype, as Flower's does.
    into_scratch = [(flat[:1] * weight).dtype == total.dtype for flat, weight in zip(flats, weights)]
    for start in range(0, total.size, _PASS_CHUNK):
        stop = min(total.size, start + _PASS_CHUNK)
        chunk = total[start:stop]
        np.multiply(flats[0][start:stop], weights[0], out=chunk)
        for flat, weight, in_scratch in zip(flats[1:], weights[1:], into_scratch[1:]):
            if in_scratch:
                chunk += np.multiply(flat[start:stop], weight, out=scratch[: stop - start])
            else:
                chunk += flat[start:stop] * weight
    return total.reshape(shape)


def squared_distance(array: Array, reference: Array) -> float:
    """``sum((array - reference)^2)`` over two serialised float arrays of one shape and dtype, in one pass.

    Computed in the arrays' dtype a chunk at a time (float32 rounding, relative error about
    1e-7) and summed over chunks in float64. NaN or Inf when either array has a NaN or Inf
    value, or when the difference overflows its dtype.
    """
    return squared_distances_to([array], reference)[0]


def squared_distances_to(arrays: Sequence[Array], reference: Array) -> list[float]:
    """:func:`squared_distance` of each array to one reference, the same floats, in one sweep.

    A chunk of the reference is read once and stays in cache while every array's chunk is
    compared with it, where one array at a time reads the whole reference once per array.
    """
    base = np.ravel(array_view(reference))
    flats = [np.ravel(array_view(array)) for array in arrays]
    if any(flat.size != base.size or flat.dtype != base.dtype for flat in flats):
        raise ValueError("arrays must share the reference's size and dtype")
    scratch = np.empty(min(base.size, _PASS_CHUNK), base.dtype)
    totals = [0.0] * len(flats)
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite total is the answer
        for start in range(0, base.size, _PASS_CHUNK):
            stop = min(base.size, start + _PASS_CHUNK)
            base_chunk = base[start:stop]
            for index, flat in enumerate(flats):
                difference = np.subtract(flat[start:stop], base_chunk, out=scratch[: stop - start])
                totals[index] += float(np.dot(difference, difference))
    return totals
