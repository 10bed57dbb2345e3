"""FedAdam and FedYogi key by key are Flower's FedAdam and FedYogi, float for float, over rounds."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAdam as FlowerFedAdam
from flwr.serverapp.strategy import FedYogi as FlowerFedYogi

from fedtumor.federation.conformance import as_serverapp, site_reply
from fedtumor.federation.in_place_fedopt import InPlaceFedAdam, InPlaceFedYogi

SHAPES = {"conv": (8, 2, 3, 3, 3), "bias": (8,), "wide": (2, 40_000)}


@pytest.fixture(autouse=True)
def serverapp_identity():
    with as_serverapp():
        yield


def global_model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {key: rng.standard_normal(shape).astype(np.float32) for key, shape in SHAPES.items()}
    arrays["steps"] = np.arange(4, dtype=np.int64)  # integer arrays take the step too, as in Flower's
    return arrays


def replies(model: dict[str, np.ndarray], seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for node_id in range(1, 5):
        noise = {key: rng.standard_normal(value.shape) * 0.01 for key, value in model.items()}
        arrays = {key: (value + noise[key]).astype(value.dtype) for key, value in model.items()}
        content = RecordDict(
            {
                "arrays": ArrayRecord({key: Array(value) for key, value in arrays.items()}),
                "metrics": MetricRecord({"num-examples": int(rng.integers(1, 30))}),
            }
        )
        out.append(site_reply(node_id, content))
    return out


@pytest.mark.parametrize(("ours", "flowers"), [(InPlaceFedAdam, FlowerFedAdam), (InPlaceFedYogi, FlowerFedYogi)])
def test_three_rounds_equal_flowers_in_the_global_models_dtypes(ours, flowers):
    our_strategy, flower_strategy = ours(), flowers()
    model = global_model(0)
    for server_round in (1, 2, 3):
        our_strategy.current_arrays = dict(model)
        flower_strategy.current_arrays = dict(model)
        our_arrays, our_metrics = our_strategy.aggregate_train(server_round, replies(model, server_round))
        flower_arrays, flower_metrics = flower_strategy.aggregate_train(server_round, replies(model, server_round))
        assert list(our_arrays.keys()) == list(flower_arrays.keys()) and dict(our_metrics) == dict(flower_metrics)
        for key, value in model.items():
            ours_now, flowers_now = our_arrays[key].numpy(), flower_arrays[key].numpy().astype(value.dtype)
            assert ours_now.dtype == value.dtype
            np.testing.assert_array_equal(ours_now, flowers_now)
            np.testing.assert_array_equal(our_strategy.m_t[key], flower_strategy.m_t[key])
            np.testing.assert_array_equal(our_strategy.v_t[key], flower_strategy.v_t[key])
        assert not np.array_equal(our_arrays["conv"].numpy(), model["conv"])  # a step was taken
        model = {key: array.numpy() for key, array in our_arrays.items()}


def test_a_reply_without_the_global_models_keys_is_an_aggregation_error():
    strategy = InPlaceFedAdam()
    model = global_model(1)
    strategy.current_arrays = {**model, "extra": np.zeros(3, np.float32)}
    with pytest.raises(AggregationError, match="Keys"):
        strategy.aggregate_train(1, replies(model, 1))
