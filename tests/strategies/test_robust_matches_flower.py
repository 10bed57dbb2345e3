"""Chunked FedMedian, FedTrimmedAvg and Krum give Flower's results on the same replies."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedMedian as FlowerFedMedian
from flwr.serverapp.strategy import FedTrimmedAvg as FlowerFedTrimmedAvg
from flwr.serverapp.strategy import Krum as FlowerKrum
from flwr.serverapp.strategy import MultiKrum as FlowerMultiKrum
from flwr.serverapp.strategy.multikrum import compute_distances

from fedtumor.federation import robust_aggregation
from fedtumor.federation.conformance import as_serverapp, site_reply
from fedtumor.federation.robust_aggregation import squared_distances
from strategies.fedmedian import ChunkedFedMedian
from strategies.fedtrimmedavg import ChunkedFedTrimmedAvg
from strategies.krum import ChunkedKrum

# Several chunks (and a short last one), a chunk-sized tensor, small tensors Flower's own code takes, a scalar.
SHAPES = {"conv": (24, 8, 3, 3, 3), "dense": (300, 70), "bias": (24,), "norm": (1, 24, 1), "scale": ()}


@pytest.fixture(autouse=True)
def serverapp_identity(monkeypatch):
    monkeypatch.setattr(robust_aggregation, "CHUNK_COORDINATES", 1000)  # many chunks on small tensors
    with as_serverapp():
        yield


def site_models(num_sites: int, seed: int, spread=None) -> list[dict[str, np.ndarray]]:
    """Random float32 models around a common one; ``spread[i]`` scales site i's deviation."""
    rng = np.random.default_rng(seed)
    common = {key: np.asarray(rng.standard_normal(shape), np.float32) for key, shape in SHAPES.items()}
    spread = spread or [1.0] * num_sites
    deviation = [{key: spread[i] * rng.standard_normal(v.shape) for key, v in common.items()} for i in range(num_sites)]
    return [{key: np.asarray(v + deviation[i][key], np.float32) for key, v in common.items()} for i in range(num_sites)]


def replies(models: list[dict[str, np.ndarray]]) -> list:
    """Fresh messages for every call: Flower's FedMedian and FedTrimmedAvg empty them."""
    return [
        site_reply(
            node_id,
            RecordDict(
                {
                    "arrays": ArrayRecord({key: Array(value) for key, value in model.items()}),
                    "metrics": MetricRecord({"num-examples": 3 + node_id, "loss": 0.1 * node_id}),
                }
            ),
        )
        for node_id, model in enumerate(models, start=1)
    ]


def both(ours, flowers, models):
    our_arrays, our_metrics = ours.aggregate_train(1, replies(models))
    flower_arrays, flower_metrics = flowers.aggregate_train(1, replies(models))
    assert list(our_arrays.keys()) == list(flower_arrays.keys())
    assert dict(our_metrics) == dict(flower_metrics)
    return {k: a.numpy() for k, a in our_arrays.items()}, {k: a.numpy() for k, a in flower_arrays.items()}


@pytest.mark.parametrize("num_sites", [2, 3, 4, 7, 12])
def test_fedmedian_is_flowers_bit_for_bit(num_sites):
    ours, flowers = both(ChunkedFedMedian(), FlowerFedMedian(), site_models(num_sites, seed=num_sites))
    for key, value in flowers.items():
        assert ours[key].dtype == value.dtype == np.float32 and ours[key].shape == value.shape
        np.testing.assert_array_equal(ours[key], value)


def test_fedmedian_of_a_coordinate_with_nan_is_nan_as_numpys():
    models = site_models(5, seed=1)
    models[2]["dense"][7, 3] = np.nan
    ours, flowers = both(ChunkedFedMedian(), FlowerFedMedian(), models)
    assert np.isnan(ours["dense"][7, 3])
    np.testing.assert_array_equal(ours["dense"], flowers["dense"])


@pytest.mark.parametrize(("num_sites", "beta"), [(2, 0.2), (5, 0.0), (5, 0.2), (10, 0.1), (12, 0.25), (13, 0.45)])
def test_fedtrimmedavg_is_flowers_up_to_float32_summation_order(num_sites, beta):
    models = site_models(num_sites, seed=num_sites)
    ours, flowers = both(ChunkedFedTrimmedAvg(beta=beta), FlowerFedTrimmedAvg(beta=beta), models)
    kept = num_sites - 2 * int(beta * num_sites)
    for key, value in flowers.items():
        assert ours[key].dtype == value.dtype == np.float32 and ours[key].shape == value.shape
        stacked = np.stack([model[key] for model in models])
        # Both add the same kept values in float32, in different orders: each is within
        # (kept - 1) eps max|x| of the exact mean.
        bound = 2 * kept * np.finfo(np.float32).eps * np.abs(stacked).max()
        np.testing.assert_allclose(ours[key], value, rtol=0, atol=bound)
        if stacked[0].size <= robust_aggregation.SMALL_TENSOR:  # Flower's own arithmetic
            np.testing.assert_array_equal(ours[key], value)
        else:  # exactly the float32 mean of each coordinate's sorted kept values
            low = int(beta * num_sites)
            lanes = np.sort(np.ascontiguousarray(stacked.reshape(num_sites, -1).T), axis=1)
            np.testing.assert_array_equal(ours[key].ravel(), lanes[:, low : num_sites - low].mean(axis=1))


def test_fedtrimmedavg_refuses_a_beta_flower_refuses():
    with pytest.raises(ValueError, match="beta"):
        ChunkedFedTrimmedAvg(beta=0.5)


def test_squared_distances_match_flowers_within_its_float32_rounding():
    models = site_models(6, seed=3, spread=[0.5, 1.0, 2.0, 0.1, 3.0, 1.5])
    records = [ArrayRecord({key: Array(value) for key, value in model.items()}) for model in models]
    ours = squared_distances(records, list(SHAPES))
    flat = np.stack([np.concatenate([model[key].ravel() for key in SHAPES]).astype(np.float64) for model in models])
    exact = np.square(flat[:, None, :] - flat[None, :, :]).sum(axis=2)
    np.testing.assert_allclose(ours, exact, rtol=1e-6)
    assert np.all(np.diag(ours) == 0.0)
    np.testing.assert_allclose(ours, compute_distances(records), rtol=1e-4, atol=1e-2 * exact.max() * 1e-4)


@pytest.mark.parametrize(
    ("num_sites", "num_malicious", "spread"),
    [
        (4, 0, [1.0, 0.2, 0.5, 5.0]),
        (7, 2, [3.0, 0.3, 1.0, 0.6, 8.0, 0.9, 2.0]),
        (12, 3, [0.2 + 0.37 * i for i in range(12)][::-1]),
    ],
)
def test_krum_picks_flowers_site_and_returns_its_model(num_sites, num_malicious, spread):
    models = site_models(num_sites, seed=num_sites, spread=spread)
    ours, flowers = both(
        ChunkedKrum(num_malicious_nodes=num_malicious), FlowerKrum(num_malicious_nodes=num_malicious), models
    )
    for key, value in flowers.items():
        np.testing.assert_array_equal(ours[key], value)
    chosen = [i for i, model in enumerate(models) if np.array_equal(model["conv"], ours["conv"])]
    assert len(chosen) == 1 and spread[chosen[0]] != max(spread)  # a central site, not the outlier


def test_multikrum_selection_is_flowers():
    # Multi-Krum (several sites kept, then averaged) goes through the same selection.
    class ChunkedMultiKrum(FlowerMultiKrum):
        aggregate_train = ChunkedKrum.aggregate_train

    models = site_models(9, seed=5, spread=[0.3, 2.0, 0.5, 4.0, 0.8, 1.1, 6.0, 0.4, 1.6])
    ours, flowers = both(
        ChunkedMultiKrum(num_malicious_nodes=2, num_nodes_to_select=4),
        FlowerMultiKrum(num_malicious_nodes=2, num_nodes_to_select=4),
        models,
    )
    for key, value in flowers.items():
        np.testing.assert_allclose(ours[key], value, rtol=0, atol=0)
