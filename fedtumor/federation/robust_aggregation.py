"""Coordinate-wise median, trimmed mean and Krum distances, computed chunk by chunk.

Flower's FedMedian, FedTrimmedAvg and Krum deserialise every reply and stack whole
tensors (Krum: whole models) across sites: several times the round's replies in memory,
and each coordinate's values a tensor's size apart, so slow. Here the replies are read in
place (:func:`~fedtumor.federation.array_views.array_view`) and gathered a chunk of
coordinates at a time into one reused buffer, so the extra memory is the aggregate plus
one chunk.

The median is Flower's bit for bit (each coordinate's sites sorted; the middle values and
their mean are what ``np.median`` takes). The trimmed mean keeps Flower's values and adds
them in sorted order, not in the order Flower's partition leaves them: float32 rounding
apart (a few ulp), the same. Krum's squared distances are summed in float64 from
coordinates relative to the first site, so they are more accurate than Flower's float32
``|a|^2 + |b|^2 - 2ab`` over whole models; the chosen site is Flower's unless two sites'
scores are within that float32 rounding of each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

from fedtumor.federation.array_views import array_view

# Coordinates per chunk: sites x 16 Ki x 4 B is 4.5 MiB for 71 sites, which stays in cache.
CHUNK_COORDINATES = 1 << 14
# Krum's chunks are BLAS calls: big enough that waking BLAS threads is paid rarely
# (71 sites x 256 Ki x 4 B = 71 MiB, a small part of a round of replies).
KRUM_CHUNK_COORDINATES = 1 << 18
# Tensors this small (norm scales, biases) go through Flower's own code on a full stack.
SMALL_TENSOR = 1 << 12
_EXACT_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def flat_views(records: Sequence[ArrayRecord], key: str) -> list[np.ndarray]:
    """Each reply's ``key`` as a flat read-only view, in C order (copied only if Fortran-ordered)."""
    return [np.ravel(array_view(record[key])) for record in records]


class _SiteLanes:
    """Coordinates ``start:stop`` of every site as rows of one reused buffer: a coordinate's sites contiguous.

    Each site's chunk is copied whole, then the chunk transposed in cache: faster than
    writing every site's values a site count apart.
    """

    def __init__(self, flats: Sequence[np.ndarray]):
        self.flats = flats
        chunk = min(flats[0].size, CHUNK_COORDINATES)
        self.rows = np.empty((len(flats), chunk), flats[0].dtype)
        self.lanes = np.empty((chunk, len(flats)), flats[0].dtype)

    def chunk(self, start: int, stop: int) -> np.ndarray:
        rows, lanes = self.rows[:, : stop - start], self.lanes[: stop - start]
        for site, flat in enumerate(self.flats):
            rows[site] = flat[start:stop]
        lanes[...] = rows.T
        return lanes


def coordinate_median(flats: Sequence[np.ndarray]) -> np.ndarray:
    """``np.median(np.stack(flats), axis=0)``, one chunk of coordinates at a time.

    Each coordinate's sites are sorted (NumPy's vectorised sort, several times faster than
    the multi-pivot partition ``np.median`` makes); the middle values, their mean and a NaN
    anywhere are then exactly what ``np.median`` gives.
    """
    size, dtype = flats[0].size, flats[0].dtype
    if size <= SMALL_TENSOR or dtype not in _EXACT_FAST_DTYPES:
        return np.median(np.stack(flats), axis=0)
    sites = len(flats)
    middle = slice((sites - 1) // 2, sites // 2 + 1)  # one value for odd counts, two for even
    lanes = _SiteLanes(flats)
    median = np.empty(size, dtype)
    for start in range(0, size, CHUNK_COORDINATES):
        stop = min(size, start + CHUNK_COORDINATES)
        block = lanes.chunk(start, stop)
        block.sort(axis=1)
        out = median[start:stop]
        np.mean(block[:, middle], axis=1, out=out)
        out[np.isnan(block[:, -1])] = np.nan  # sort puts NaN last; np.median answers NaN for such a coordinate
    return median


def coordinate_trimmed_mean(flats: Sequence[np.ndarray], beta: float) -> np.ndarray:
    """Flower's ``trim_mean(np.stack(flats), beta)``, one chunk of coordinates at a time.

    Each coordinate's sites are sorted and the kept ``[int(beta n), n - int(beta n))`` are
    averaged in float32: the same values as Flower's, added in sorted order rather than in
    the order Flower's multi-pivot ``np.partition`` happens to leave them (that partition
    costs 7x the sort). The two means differ by float32 rounding only: each is within
    ``(k - 1) eps sum|kept|`` of the exact mean times k. Raises ValueError where Flower's
    does (``beta`` outside [0, 0.5)).
    """
    size, dtype = flats[0].size, flats[0].dtype
    if size <= SMALL_TENSOR or dtype not in _EXACT_FAST_DTYPES or not 0.0 <= beta < 0.5:
        return trim_mean(np.stack(flats), beta)
    sites = len(flats)
    low = int(beta * sites)
    kept = slice(low, sites - low)
    lanes = _SiteLanes(flats)
    mean = np.empty(size, dtype)
    for start in range(0, size, CHUNK_COORDINATES):
        stop = min(size, start + CHUNK_COORDINATES)
        block = lanes.chunk(start, stop)
        block.sort(axis=1)
        np.mean(block[:, kept], axis=1, out=mean[start:stop])
    return mean


def coordinate_wise(contents: Sequence[RecordDict], reduce: Callable[[list[np.ndarray]], np.ndarray]) -> ArrayRecord:
    """Each array of the replies' first ArrayRecord reduced coordinate by coordinate (``reduce(flat views)``)."""
    record_key = next(iter(contents[0].array_records.keys()))
    records = [content[record_key] for content in contents]
    arrays = ArrayRecord()
    for key, first in records[0].items():
        arrays[key] = Array(reduce(flat_views(records, key)).reshape(tuple(first.shape)))
    return arrays


def _gram(rows: np.ndarray) -> np.ndarray:
    """``rows @ rows.T`` in float64 (float32 rows go through BLAS syrk in float32, per chunk)."""
    if rows.dtype != np.float32:
        rows = rows.astype(np.float64, copy=False)
    return (rows @ rows.T).astype(np.float64, copy=False)


def squared_distances(records: Sequence[ArrayRecord], keys: Sequence[str]) -> np.ndarray:
    """Squared L2 distances between the replies' models (all ``keys``), an (n, n) float64 matrix.

    Distances do not change when every site is shifted by the same vector; shifting by the
    first site's model keeps ``|a|^2 + |b|^2 - 2ab`` free of the cancellation that the
    models' large norms cause.
    """
    sites = len(records)
    gram = np.zeros((sites, sites), np.float64)
    for key in keys:
        flats = flat_views(records, key)
        size, dtype = flats[0].size, np.result_type(flats[0].dtype, np.float32)
        rows = np.empty((sites, min(size, KRUM_CHUNK_COORDINATES)), dtype)
        for start in range(0, size, KRUM_CHUNK_COORDINATES):
            stop = min(size, start + KRUM_CHUNK_COORDINATES)
            block = rows[:, : stop - start]
            reference = flats[0][start:stop]
            for site, flat in enumerate(flats):
                np.subtract(flat[start:stop], reference, out=block[site], casting="unsafe")
            gram += _gram(block)
    norms = np.diag(gram).copy()
    distances = norms[:, None] + norms[None, :] - 2.0 * gram
    np.fill_diagonal(distances, 0.0)
    return distances


def multikrum_indices(distances: np.ndarray, num_malicious_nodes: int, num_nodes_to_select: int) -> list[int]:
    """The sites (Multi-)Krum keeps given their squared distances: Flower's ``select_multikrum`` rule."""
    num_closest = max(1, len(distances) - num_malicious_nodes - 2)
    scores = [np.sum(row[np.argsort(row)[1 : num_closest + 1]]) for row in distances]
    return [int(index) for index in np.argsort(scores)[:num_nodes_to_select]]


def select_multikrum(contents: Sequence[RecordDict], num_malicious_nodes: int, num_nodes_to_select: int) -> list:
    """Flower's ``select_multikrum`` on tensor-by-tensor distances; the replies' contents it keeps."""
    record_key = next(iter(contents[0].array_records.keys()))
    records = [content[record_key] for content in contents]
    distances = squared_distances(records, list(records[0].keys()))
    return [contents[i] for i in multikrum_indices(distances, num_malicious_nodes, num_nodes_to_select)]
