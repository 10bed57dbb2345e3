"""The in-place weighted mean is Flower's FedAvg arithmetic, float for float."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam as FlowerFedAdam
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedtumor.federation.conformance import as_serverapp, site_reply
from fedtumor.federation.in_place_fedavg import InPlaceFedAvg, weighted_means_in_place

# "wide" spans three of the sum's cache-sized chunks, the last one partial.
SHAPES = {"conv": (16, 4, 3, 3, 3), "bias": (16,), "scale": (), "wide": (3, 50_001)}


@pytest.fixture(autouse=True)
def serverapp_identity():
    with as_serverapp():
        yield


def contents(num_sites: int, seed: int) -> list[RecordDict]:
    rng = np.random.default_rng(seed)
    out = []
    for site in range(num_sites):
        arrays = {key: np.asarray(rng.standard_normal(shape), np.float32) for key, shape in SHAPES.items()}
        arrays["steps"] = np.arange(5, dtype=np.int64) * (site + 1)  # integers average to float64 in Flower's
        weight = int(rng.integers(1, 50)) if site % 2 else float(rng.integers(1, 50))
        out.append(
            RecordDict(
                {
                    "arrays": ArrayRecord({key: Array(value) for key, value in arrays.items()}),
                    "metrics": MetricRecord({"num-examples": weight, "loss": float(rng.random())}),
                }
            )
        )
    return out


@pytest.mark.parametrize("num_sites", [1, 2, 5, 9])
def test_weighted_mean_equals_flowers_bit_for_bit(num_sites):
    ours = weighted_means_in_place(contents(num_sites, num_sites), "num-examples")
    flowers = aggregate_arrayrecords(contents(num_sites, num_sites), "num-examples")
    assert list(ours) == list(flowers.keys())
    for key, array in flowers.items():
        expected = array.numpy()
        assert ours[key].dtype == expected.dtype and ours[key].shape == expected.shape
        np.testing.assert_array_equal(ours[key], expected)


@pytest.mark.parametrize(
    ("ours", "flowers"),
    [
        (InPlaceFedAvg, FlowerFedAvg),
        # Last in the bases, it serves the super().aggregate_train of Flower's FedAvg subclasses.
        (type("InPlaceFedAdam", (FlowerFedAdam, InPlaceFedAvg), {}), FlowerFedAdam),
    ],
)
def test_strategies_aggregate_as_flowers(ours, flowers):
    def run(strategy_class):
        strategy = strategy_class()
        if isinstance(strategy, FlowerFedAdam):  # its server step starts from the global model
            strategy.current_arrays = {k: a.numpy() for k, a in contents(1, 99)[0]["arrays"].items()}
        replies = [site_reply(node_id, content) for node_id, content in enumerate(contents(4, 7), start=1)]
        arrays, metrics = strategy.aggregate_train(1, replies)
        return {key: array.numpy() for key, array in arrays.items()}, dict(metrics)

    (our_arrays, our_metrics), (flower_arrays, flower_metrics) = run(ours), run(flowers)
    assert our_metrics == flower_metrics
    assert our_arrays.keys() == flower_arrays.keys()
    for key, value in flower_arrays.items():
        np.testing.assert_array_equal(our_arrays[key], value)
