"""Reading Flower's serialised arrays in place."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedtumor.federation.array_views import all_finite, array_view, weighted_sum


@pytest.mark.parametrize(
    "values",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.arange(5, dtype=np.int64),
        np.float16(3.5) * np.ones((2, 2), np.float16),
        np.zeros((0, 3), np.float32),
    ],
)
def test_view_equals_deserialised_array(values):
    view = array_view(Array(values))
    assert view.dtype == values.dtype and view.shape == values.shape
    np.testing.assert_array_equal(view, Array(values).numpy())
    assert not view.flags.writeable  # a view of the message's bytes


@pytest.mark.parametrize(
    ("values", "finite"),
    [
        (np.ones((3, 4), np.float32), True),
        (np.array([1.0, np.nan], np.float32), False),
        (np.array([np.inf, 1.0]), False),
        (np.array([np.inf, -np.inf]), False),
        (np.arange(5), True),
        (np.asfortranarray(np.ones((3, 4), np.float16)), True),
    ],
)
def test_all_finite_reads_serialised_arrays(values, finite):
    assert all_finite(Array(values)) is finite


def test_weighted_sum_keeps_float32_and_weights_each_reply():
    records = [ArrayRecord({"w": Array(np.array(v, np.float32))}) for v in ([4.0, 0.0], [0.0, 4.0], [2.0, 2.0])]
    total = weighted_sum(records, "w", [0.25, 0.5, 0.25])
    assert total.dtype == np.float32
    np.testing.assert_allclose(total, [1.5, 2.5])  # 0.25*[4,0] + 0.5*[0,4] + 0.25*[2,2]
    assert np.array_equal(array_view(records[0]["w"]), [4.0, 0.0])  # inputs untouched


def test_weighted_sum_of_integers_is_float():
    records = [ArrayRecord({"n": Array(np.array([1, 3], np.int64))}), ArrayRecord({"n": Array(np.array([3, 5]))})]
    np.testing.assert_allclose(weighted_sum(records, "n", [0.5, 0.5]), [2.0, 4.0])


def test_squared_distance_is_the_float64_sum_up_to_float32_rounding_and_flags_non_finite_values():
    from fedtumor.federation.array_views import squared_distance

    rng = np.random.default_rng(1)
    base = rng.standard_normal((200, 1000)).astype(np.float32)  # several chunks, a short last one
    values = base + rng.standard_normal(base.shape).astype(np.float32) * 1e-2
    exact = float(np.sum(np.square(values.astype(np.float64) - base)))
    assert squared_distance(Array(values), Array(base)) == pytest.approx(exact, rel=1e-6)
    values[17, 3] = np.inf
    assert not np.isfinite(squared_distance(Array(values), Array(base)))
    values[17, 3] = np.nan
    assert np.isnan(squared_distance(Array(values), Array(base)))
