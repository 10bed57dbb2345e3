"""The warm-up before round 1: the ServerApp's messages, and the real ClientApp answering one.

Live: tests/e2e/test_deployment_e2e.py warms a node worker and a per-message SuperNode up
(``warm-up=true``; it is off by default).
"""

from types import SimpleNamespace

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict

import client_app.app as client_module
from client_app.app import app
from data_loaders.synthetic import generate_cohort
from fedtumor.core.config import read_run_config
from fedtumor.core.model import build_model
from fedtumor.federation import conformance
from fedtumor.federation.replies import SITE_ERROR_CODE
from fedtumor.federation.warm_up import WARM_UP_MESSAGE_TYPE, finish_warm_up, start_warm_up
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CONFIG_KEY,
    LEARNING_RATE_KEY,
    LOCAL_EPOCHS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    SERVER_ROUND_KEY,
    SITE_ID_KEY,
    SITE_RECORD_KEY,
)

TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=2 augment=false"


class RecordingGrid:
    """Keeps what was pushed; answers ``receive`` with one reply per id, the ids in ``failing`` with an error."""

    def __init__(self, failing: frozenset[str] = frozenset()):
        self.pushed: list[Message] = []
        self.failing = failing
        self.timeout = None

    def push_messages(self, messages):
        self.pushed = list(messages)
        return [f"m{i}" for i in range(len(self.pushed))]

    def receive(self, message_ids, *, timeout=None):
        self.timeout = timeout
        return [SimpleNamespace(has_error=lambda i=i: i in self.failing) for i in message_ids]


def test_the_serverapp_warms_every_node_up_and_counts_the_ready_ones():
    grid = RecordingGrid(failing=frozenset({"m1"}))
    with conformance.as_serverapp():
        pending = start_warm_up(grid, [11, 12, 13])
    assert [m.metadata.dst_node_id for m in grid.pushed] == [11, 12, 13]
    assert {m.metadata.message_type for m in grid.pushed} == {WARM_UP_MESSAGE_TYPE}
    assert finish_warm_up(grid, pending, timeout_s=42.0) == 2 and grid.timeout == 42.0


def _context(config, node_config: dict) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=config.to_run_config())


def _warm_up(run_config: str, node_config: dict) -> Message:
    config = read_run_config(run_config)
    message = conformance.site_instruction(
        1, RecordDict({CONFIG_KEY: ConfigRecord()}), message_type=WARM_UP_MESSAGE_TYPE
    )
    context = Context(
        run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=config.to_run_config()
    )
    return app(message, context)


def _train(run_config: str, node_config: dict) -> Message:
    config = read_run_config(run_config)
    torch.manual_seed(0)
    arrays = ArrayRecord(build_model(config.model, config.base_filters).state_dict())
    settings = ConfigRecord({SERVER_ROUND_KEY: 1, LEARNING_RATE_KEY: 0.01, LOCAL_EPOCHS_KEY: 1})
    message = conformance.site_instruction(1, RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: settings}))
    context = Context(
        run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=config.to_run_config()
    )
    return app(message, context)


def test_a_warmed_up_site_keeps_its_data_and_trains_exactly_as_a_cold_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))
    generate_cohort(tmp_path / "cohort", n_sites=1, n_subjects=4, seed=3, shape=64, n_test=1, progress=False)
    run_config, node = f"data-dir='{tmp_path / 'cohort'}' {TINY}", {"partition-id": 0, "num-partitions": 1}
    client_module._site_cache.clear()
    cold = _train(run_config, node)
    client_module._site_cache.clear()
    reply = _warm_up(run_config, node)
    assert not reply.has_error(), reply.error
    assert reply.content[SITE_RECORD_KEY][SITE_ID_KEY] == "site-1"
    site = client_module._site_cache.sites()[-1]  # kept for round 1
    assert reply.content[METRICS_KEY][NUM_EXAMPLES_KEY] == len(site.train) > 0
    torch.manual_seed(12345)  # whatever the process drew before: each round seeds its own patches
    warm = _train(run_config, node)
    assert client_module._site_cache.sites()[-1] is site  # not loaded again
    for key, array in cold.content[ARRAYS_KEY].items():
        assert np.array_equal(array.numpy(), warm.content[ARRAYS_KEY][key].numpy()), key


def test_a_site_with_bad_data_says_so_on_warm_up_as_in_a_round(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))
    reply = _warm_up(TINY, {"data-dir": str(tmp_path / "gone"), "site-id": "hospital-b"})
    assert reply.has_error() and isinstance(reply.error, Error) and reply.error.code == SITE_ERROR_CODE
    assert reply.error.reason == "site hospital-b: data-dir: data folder does not exist"
