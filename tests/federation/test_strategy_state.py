"""Every built-in strategy resumes: rounds 1-2, state through resume_state.pt, round 3 = uninterrupted round 3."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedtumor.core.config import RunConfig
from fedtumor.federation.conformance import FakeGrid, as_serverapp, site_reply
from fedtumor.federation.registry import build_strategy, load_registry
from fedtumor.federation.wire import SITE_RECORD_KEY
from fedtumor.run.resume import ResumeState, load_resume_state, rng_state, save_resume_state
from strategies.scaffold import DELTA_PREFIX

NODES = (11, 12, 13)
STATEFUL = ("fedavgm", "fedadam", "fedyogi", "scaffold", "fedpidavg")
GLOBAL = ArrayRecord({"w": Array(np.zeros((3, 4), np.float32)), "b": Array(np.zeros(4, np.float32))})


@pytest.fixture(autouse=True)
def server_identity():
    """Flower stamps a ServerApp's identity on every Message it builds."""
    with as_serverapp():
        yield


def reply(server_round: int, node_id: int, sent: ArrayRecord, with_deltas: bool):
    """A site's deterministic update for this round: the global model plus a seeded step."""
    rng = np.random.default_rng([server_round, node_id])
    arrays = {k: Array((a.numpy() + rng.normal(0, 0.1, a.shape)).astype(np.float32)) for k, a in sent.items()}
    if with_deltas:  # SCAFFOLD's control-variate changes
        arrays |= {DELTA_PREFIX + k: Array(rng.normal(0, 0.01, a.shape).astype(np.float32)) for k, a in sent.items()}
    loss = float(1.0 / (server_round + node_id % 3))
    content = RecordDict(
        {
            "arrays": ArrayRecord(arrays),
            "metrics": MetricRecord({"num-examples": node_id % 4 + 1, "loss": loss, "loss-before": loss + 0.1}),
            SITE_RECORD_KEY: ConfigRecord({"site-id": f"site-{node_id - 10}"}),
        }
    )
    return site_reply(node_id, content)


def run_round(strategy, flower_round: int, arrays: ArrayRecord) -> ArrayRecord:
    config = ConfigRecord({"learning-rate": 0.01, "local-epochs": 1})
    messages = list(strategy.configure_train(flower_round, arrays, config, FakeGrid(NODES)))
    true_round = flower_round + strategy.options.round_offset
    deltas = bool(strategy.extra_reply_prefixes)
    replies = [reply(true_round, m.metadata.dst_node_id, m.content["arrays"], deltas) for m in messages]
    new_arrays, _ = strategy.aggregate_train(flower_round, replies)
    return new_arrays


def build(name: str, round_offset: int = 0):
    return build_strategy(RunConfig(strategy=name, min_train_replies=1), round_offset=round_offset)


def as_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in arrays.items()}


@pytest.mark.parametrize("name", sorted(load_registry().plugins))
def test_round_3_after_a_resume_equals_round_3_of_an_uninterrupted_run(name, tmp_path):
    uninterrupted = build(name)
    arrays = GLOBAL
    for flower_round in (1, 2, 3):
        arrays = run_round(uninterrupted, flower_round, arrays)
    expected = as_numpy(arrays)

    first = build(name)
    arrays = run_round(first, 2, run_round(first, 1, GLOBAL))
    save_resume_state(tmp_path, ResumeState(2, as_numpy(arrays), first.state_dict(), {}, rng_state(), "0" * 64))
    saved = load_resume_state(tmp_path)

    resumed = build(name, round_offset=saved.round)
    resumed.load_state_dict(saved.strategy)
    restored = ArrayRecord({k: Array(v) for k, v in saved.arrays.items()})
    got = as_numpy(run_round(resumed, 1, restored))
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}: {key}")

    assert flat_state(resumed) == flat_state(uninterrupted)  # and the state it carries into round 4

    if name in STATEFUL:  # the state is what makes it equal: without it round 3 comes out different
        forgetful = build(name, round_offset=saved.round)
        other = as_numpy(run_round(forgetful, 1, restored))
        changed = any(not np.array_equal(other[k], expected[k]) for k in expected)
        assert changed or flat_state(forgetful) != flat_state(uninterrupted), name


def flat_state(strategy) -> dict:
    """The strategy's own state (the sites and rounds are the ledger's) as comparable bytes."""
    state = strategy.state_dict()

    def flatten(value):
        if isinstance(value, dict):
            return tuple((k, flatten(v)) for k, v in sorted(value.items()))
        if isinstance(value, (list, tuple)):
            return tuple(flatten(v) for v in value)
        if isinstance(value, np.ndarray):
            return (value.dtype.str, value.shape, value.tobytes())
        return value

    return flatten(state)
