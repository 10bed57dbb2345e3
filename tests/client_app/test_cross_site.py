"""A site's cross-site handler: scores of the global and personal models on its validation subjects, nothing else.

Real tiny models on the session cohort's real NIfTI files; a site's own validation score (its
evaluate reply) is the yardstick for every cell it reports.
"""

import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client_app.app import app
from client_app.cross_site import cross_site_reply
from data_loaders.site import load_site
from fedtumor.core.config import read_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.core.model import build_model
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.conformance import site_instruction
from fedtumor.federation.cross_site import (
    CROSS_SITE_ACTION,
    PERSONAL_ARRAYS_KEY,
    SHARED_PERSONAL_PREFIX,
    STAGE_KEY,
    STAGE_PERSONAL,
    STAGE_SCORE,
    scores_of,
)
from fedtumor.federation.replies import SITE_ERROR_CODE
from fedtumor.federation.wire import ARRAYS_KEY, CONFIG_KEY, SITE_ID_KEY, SITE_RECORD_KEY
from fedtumor.run.cross_site import CROSS_SITE_METRICS, GLOBAL_MODEL, cross_site_metrics, personal_model

TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=4 augment=false"
QUERY = f"query.{CROSS_SITE_ACTION}"
KEPT_MODEL_KEY = "test-personal-model"


class KeptModelHooks(ClientHooks):
    """A method that keeps a personal model in the node's state (as Ditto does)."""

    def load_personal(self, model, content):
        kept = self.state.get(KEPT_MODEL_KEY)
        if kept is None:
            return False
        model.load_state_dict(kept.to_torch_state_dict())
        return True

    def personal_arrays(self, content=None):
        return self.state.get(KEPT_MODEL_KEY)


@pytest.fixture
def run_config(two_site_cohort, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))  # the preprocessing cache
    return read_run_config(f"data-dir='{two_site_cohort}' cross-site-eval=true {TINY}")


def model_arrays(config, seed: int) -> ArrayRecord:
    torch.manual_seed(seed)
    return ArrayRecord(build_model(config.model, config.base_filters).state_dict())


def query(arrays: ArrayRecord, stage: str = STAGE_SCORE, **records) -> Message:
    content = RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: ConfigRecord({STAGE_KEY: stage}), **records})
    return site_instruction(1, content, message_type=QUERY)


def site_context(config, partition: int = 0) -> Context:
    node_config = {"partition-id": partition, "num-partitions": 2}
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=config.to_run_config())


def validation_scores(config, arrays: ArrayRecord, partition: int = 0) -> dict[str, float]:
    """What the site's own evaluate handler reports for ``arrays``: the yardstick."""
    message = site_instruction(1, RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: ConfigRecord({})}), "evaluate")
    reply = app(message, site_context(config, partition))
    assert not reply.has_error(), reply.error
    return cross_site_metrics({k: float(v) for k, v in reply.content.metric_records["metrics"].items()})


def handle(config, message: Message, hooks: ClientHooks, partition: int = 0) -> Message:
    site = load_site(config, {"partition-id": partition, "num-partitions": 2})
    model = build_model(config.model, config.base_filters)
    return cross_site_reply(message, config, site, model, torch.device("cpu"), hooks)


def test_the_clientapp_answers_a_cross_site_query_with_scores_only(run_config):
    arrays = model_arrays(run_config, seed=0)
    reply = app(query(arrays), site_context(run_config))
    assert not reply.has_error(), reply.error
    assert len(reply.content.array_records) == 0  # no model leaves the site
    assert reply.content[SITE_RECORD_KEY][SITE_ID_KEY] == "site-1"
    scores = scores_of(reply.content)
    assert list(scores) == [GLOBAL_MODEL]  # plain FedAvg keeps no personal model
    assert set(scores[GLOBAL_MODEL]) == set(CROSS_SITE_METRICS)
    assert scores[GLOBAL_MODEL] == pytest.approx(validation_scores(run_config, arrays))


def test_a_site_scores_its_personal_model_and_the_shared_models_of_others(run_config):
    global_arrays = model_arrays(run_config, seed=0)
    kept, other, stale_own = (model_arrays(run_config, seed=s) for s in (1, 2, 3))
    hooks = KeptModelHooks({}, RecordDict({KEPT_MODEL_KEY: kept}))
    shared = {f"{SHARED_PERSONAL_PREFIX}site-2": other, f"{SHARED_PERSONAL_PREFIX}site-1": stale_own}
    reply = handle(run_config, query(global_arrays, **shared), hooks)
    assert len(reply.content.array_records) == 0
    scores = scores_of(reply.content)
    assert list(scores) == [GLOBAL_MODEL, personal_model("site-1"), personal_model("site-2")]
    # Each cell is what this site's own validation reports for that model; its own comes from its state.
    assert scores[GLOBAL_MODEL] == pytest.approx(validation_scores(run_config, global_arrays))
    assert scores[personal_model("site-1")] == pytest.approx(validation_scores(run_config, kept))
    assert scores[personal_model("site-2")] == pytest.approx(validation_scores(run_config, other))
    for metrics in scores.values():
        assert all(0.0 <= value <= 1.0 and math.isfinite(value) for value in metrics.values())


def test_the_other_site_scores_the_same_global_model_on_its_own_subjects(run_config):
    arrays = model_arrays(run_config, seed=0)
    reply = handle(run_config, query(arrays), ClientHooks({}, RecordDict()), partition=1)
    assert reply.content[SITE_RECORD_KEY][SITE_ID_KEY] == "site-2"
    assert scores_of(reply.content)[GLOBAL_MODEL] == pytest.approx(validation_scores(run_config, arrays, partition=1))


def test_a_personal_model_is_sent_only_when_the_sites_own_config_opts_in(run_config):
    kept = model_arrays(run_config, seed=1)
    hooks = KeptModelHooks({}, RecordDict({KEPT_MODEL_KEY: kept}))
    ask = query(model_arrays(run_config, seed=0), STAGE_PERSONAL)
    with pytest.raises(ConfigError, match="cross-site-share-personal"):
        handle(run_config, ask, hooks)
    # Through the ClientApp: a one-line site error, not a crash and not the model.
    refused = app(ask, site_context(run_config))
    assert refused.has_error() and refused.error.code == SITE_ERROR_CODE
    assert "cross-site-share-personal" in refused.error.reason

    sharing = run_config.replace(cross_site_share_personal=True)
    reply = handle(sharing, ask, hooks)
    sent = reply.content.array_records[PERSONAL_ARRAYS_KEY].to_torch_state_dict()
    for name, tensor in kept.to_torch_state_dict().items():
        assert torch.equal(sent[name], tensor), name
    # A method without a personal model sends no arrays even then.
    assert len(handle(sharing, ask, ClientHooks({}, RecordDict())).content.array_records) == 0


def test_sharing_personal_models_needs_cross_site_evaluation():
    with pytest.raises(ConfigError, match="run-config key 'cross-site-share-personal'"):
        read_run_config("cross-site-share-personal=true")
