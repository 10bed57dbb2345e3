"""The example plugin's own tests: the clipping arithmetic by hand, then fedtumor's conformance kit."""

import numpy as np
import pytest
from fedtumor.core.errors import ConfigError
from fedtumor.federation.conformance import as_serverapp, assert_conforms
from fedtumor.federation.options import StrategyOptions
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedtumor_example_plugin.norm_clipped import (
    FedAvgNormClippedPlugin,
    FlowerFedAvgNormClipped,
    clip_update,
    update_norm,
)


def record(**arrays) -> ArrayRecord:
    return ArrayRecord({key: Array(np.asarray(values, dtype=np.float32)) for key, values in arrays.items()})


GLOBAL = record(w=[1.0, 1.0], b=[0.0])


def test_update_norm_spans_all_arrays():
    # update (3, 0) and (4,): norm 5
    assert update_norm(record(w=[4.0, 1.0], b=[4.0]), GLOBAL) == pytest.approx(5.0)


def test_long_update_is_scaled_to_the_limit_short_one_kept():
    clipped, norm = clip_update(record(w=[4.0, 1.0], b=[4.0]), GLOBAL, max_norm=1.0)
    assert norm == pytest.approx(5.0)
    # the update (3, 0, 4) scaled by 1/5 is (0.6, 0, 0.8)
    assert np.allclose(clipped["w"].numpy(), [1.6, 1.0]) and np.allclose(clipped["b"].numpy(), [0.8])
    assert clipped["w"].dtype == "float32"
    short = record(w=[1.3, 1.0], b=[0.4])  # norm 0.5
    kept, norm = clip_update(short, GLOBAL, max_norm=1.0)
    assert norm == pytest.approx(0.5) and kept is short


def test_aggregate_is_the_weighted_mean_of_clipped_updates():
    """Sites with 1 and 3 subjects send updates of norm 5 and 0.5; C = 1: w' = w + (1*0.2*d1 + 3*d2) / 4."""
    strategy = FlowerFedAvgNormClipped(max_update_norm=1.0)
    strategy.current_arrays = GLOBAL
    with as_serverapp():  # Flower stamps each Message with the ServerApp's identity
        replies = [reply(record(w=[4.0, 1.0], b=[4.0]), 1), reply(record(w=[1.3, 1.0], b=[0.4]), 3)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    # w: 1 + (1 * 0.6 + 3 * 0.3) / 4 = 1.375, 1;  b: (1 * 0.8 + 3 * 0.4) / 4 = 0.5
    assert np.allclose(arrays["w"].numpy(), [1.375, 1.0]) and np.allclose(arrays["b"].numpy(), [0.5])
    assert metrics["update-norm-max"] == pytest.approx(5.0) and metrics["clipped-fraction"] == 0.5


def reply(arrays: ArrayRecord, num_examples: int) -> Message:
    """A site's train reply, as the strategy receives it."""
    instruction = Message(RecordDict({"config": ConfigRecord()}), dst_node_id=num_examples, message_type="train")
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": num_examples})})
    return Message(content, reply_to=instruction)


def test_build_refuses_a_non_positive_limit_and_keeps_its_own_apart_from_the_run_options():
    with pytest.raises(ConfigError, match="max-update-norm > 0"):
        FedAvgNormClippedPlugin().build({"max-update-norm": 0.0}, StrategyOptions())
    # The strategy's C is the plugin parameter; the run's reply bound (0: none) stays in the options.
    options = StrategyOptions(min_available_nodes=3, max_update_norm=0.0)
    strategy = FedAvgNormClippedPlugin().build({"max-update-norm": 5.0}, options)
    assert strategy.max_update_norm == 5.0
    assert strategy.options is options and strategy.min_available_nodes == 3


def test_plugin_conforms():
    assert_conforms(FedAvgNormClippedPlugin)
