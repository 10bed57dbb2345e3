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
        (np.full(4, 3e38, np.float32), True),  # finite values whose squares overflow the dot product
        (np.array([3e38, -np.inf], np.float32), False),
        (np.asfortranarray(np.full((2, 3), np.nan)), False),
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


def test_weighted_total_is_the_array_at_a_time_sum_bit_for_bit_across_chunks_and_dtypes():
    from fedtumor.federation.array_views import weighted_total

    rng = np.random.default_rng(3)
    shape = (2, 70_001)  # three chunks, the last one partial
    values = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    values[2] = values[2].astype(np.float64)  # one reply in another dtype adds in its own, as Flower's
    weights = [0.1, 0.2, 0.3, 0.4]
    expected = values[0] * weights[0]
    for value, weight in zip(values[1:], weights[1:]):
        expected += value * weight
    total = weighted_total(values, weights)
    assert total.dtype == expected.dtype == np.float32 and total.shape == shape
    assert np.array_equal(total, expected)
    with pytest.raises(ValueError, match="different shapes"):
        weighted_total([values[0], values[0][:1]], [0.5, 0.5])
    with pytest.raises(ValueError, match="one weight per array"):
        weighted_total(values, weights[:2])


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
