"""Baselines under the federation's rules: the local optimiser key, early stopping per round, patches seen."""

import json

import pandas as pd
import pytest
import torch
from flwr.app import Context, RecordDict

from client_app.app import app as client_app
from fedtumor.baselines.centralized import run_centralized
from fedtumor.baselines.local import run_local
from fedtumor.core.config import read_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.core.metrics import mean_dice
from fedtumor.federation.wire import ARRAYS_KEY
from fedtumor.run.files import FINAL_MODEL_FILE
from tests.baselines.test_baselines import TINY, site_train_message


@pytest.fixture(scope="module")
def base(two_site_cohort, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # one preprocessing cache for the module's runs
        patch.setenv("FEDTUMOR_HOME", str(tmp_path_factory.mktemp("home")))
        torch.set_num_threads(2)
        yield f"data-dir='{two_site_cohort}' {TINY}"


def held_out_dice(run_dir, scope="global") -> dict[int, float]:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    rows = metrics[(metrics.scope == scope) & (metrics.split == "test")]
    table = rows.pivot_table(index="round", columns="metric", values="value")
    return {int(r): mean_dice(row) for r, row in table.iterrows()}


def train_patches(run_dir) -> list[float]:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return metrics[(metrics.split == "train") & (metrics.metric == "num_patches")]["value"].tolist()


def rule_stop(scores: dict[int, float], patience: int, min_delta: float) -> int | None:
    """The early-stopping rule written out: stop once `patience` rounds in a row fail to beat the best by min_delta."""
    best, wait = float("-inf"), 0
    for server_round in sorted(r for r in scores if r >= 1):
        if scores[server_round] - best > min_delta:
            best, wait = scores[server_round], 0
        else:
            wait += 1
        if wait >= patience:
            return server_round
    return None


def test_centralized_stops_at_the_round_the_rule_gives_and_counts_the_patches_it_trained(base, tmp_path):
    # min-delta 1: no mean Dice can beat round 1's by more, so patience 1 ends the run after round 2 of 3.
    config = read_run_config(f"{base} num-server-rounds=3 early-stopping-patience=1 early-stopping-min-delta=1.0")
    summary = run_centralized(config, 2, tmp_path / "pooled")
    scores = held_out_dice(tmp_path / "pooled")
    assert sorted(scores) == [0, 1, 2] and rule_stop(scores, 1, 1.0) == 2
    assert summary["stopped_early"]["round"] == 2 and summary["stopped_early"]["best_round"] == 1
    assert summary["stopped_early"]["epoch"] == 2 * config.local_epochs
    assert "held-out mean Dice > 1.0 for 1 rounds" in summary["stopped_early"]["reason"]
    assert summary["final"]["round"] == 2
    assert summary["patches_seen"] == sum(train_patches(tmp_path / "pooled")) > 0
    saved = json.loads((tmp_path / "pooled" / "summary.json").read_text())
    assert saved["stopped_early"] == summary["stopped_early"]


def test_local_models_each_stop_by_the_rule_on_their_own_scores(base, tmp_path):
    config = read_run_config(f"{base} num-server-rounds=2 early-stopping-patience=1")
    # Scoring only rounds 0 and 2 is overridden: early stopping needs every round's score.
    summary = run_local(config, 2, tmp_path / "local", score_every_round=False)
    total = 0
    for site in ("site-1", "site-2"):
        scores = held_out_dice(tmp_path / "local" / site)
        expected = rule_stop(scores, 1, 0.0)
        assert sorted(scores) == list(range((expected or 2) + 1))
        stopped = summary["per_site_stopped_early"][site]
        assert (stopped or {}).get("round") == expected
        patches = train_patches(tmp_path / "local" / site)
        assert len(patches) == (expected or 2)
        total += sum(patches)
    assert summary["patches_seen"] == total
    assert sorted(held_out_dice(tmp_path / "local")) == [0, 1, 2]  # the mean covers every round


def test_a_site_and_its_local_baseline_train_alike_with_sgd(base, tmp_path):
    run_config = f"{base} num-server-rounds=1 optimizer='sgd' momentum=0.9 weight-decay=0.0001 run-name='sgd'"
    config = read_run_config(run_config)
    run_local(config, 2, tmp_path / "sgd", only_sites=["site-1"])
    baseline = torch.load(tmp_path / "sgd" / "site-1" / FINAL_MODEL_FILE, weights_only=True)["state_dict"]
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0, "num-partitions": 2},
        state=RecordDict(),
        run_config=config.to_run_config(),
    )
    reply = client_app(site_train_message(config, server_round=1), context)
    assert not reply.has_error(), reply.error
    federated = reply.content[ARRAYS_KEY].to_torch_state_dict()
    for name, tensor in federated.items():
        assert torch.equal(tensor, baseline[name]), name
    adam = read_run_config(run_config.replace("optimizer='sgd' momentum=0.9", "optimizer='adam'"))
    adam_reply = client_app(
        site_train_message(adam, server_round=1),
        Context(
            run_id=1, node_id=1, node_config=context.node_config, state=RecordDict(), run_config=adam.to_run_config()
        ),
    )
    adam_model = adam_reply.content[ARRAYS_KEY].to_torch_state_dict()
    assert not all(torch.equal(adam_model[name], tensor) for name, tensor in federated.items())


def val_dice(run_dir) -> dict[int, float]:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    table = metrics[metrics.split == "val"].pivot_table(index="round", columns="metric", values="value")
    return {int(r): mean_dice(row) for r, row in table.iterrows()}


def test_on_the_validation_monitor_local_models_stop_on_their_own_validation_and_score_held_out_where_they_end(
    base, tmp_path
):
    config = read_run_config(
        f"{base} num-server-rounds=3 early-stopping-patience=1 early-stopping-monitor='validation'"
    )
    summary = run_local(config, 2, tmp_path / "local", score_every_round=False)
    for site in ("site-1", "site-2"):
        site_dir = tmp_path / "local" / site
        validation = val_dice(site_dir)
        expected = rule_stop(validation, 1, 0.0) or 3
        assert sorted(validation) == list(range(1, expected + 1))  # validated every round it trained
        assert sorted(held_out_dice(site_dir)) == [0, expected]  # the test set is only read where the run ends
        scored = json.loads((site_dir / "heldout_subjects.json").read_text())
        assert scored["round"] == expected and len(scored["subjects"]) == 2
        assert summary["per_site_val"][site]["round"] == expected
        assert summary["per_site_val"][site]["mean_dice"] == pytest.approx(validation[expected])
    assert sorted(held_out_dice(tmp_path / "local")) == [0, 3]  # the mean model: each site held at its end


def test_with_server_eval_every_0_pooled_stops_on_validation_and_scores_held_out_only_where_it_ends(base, tmp_path):
    # auto: no held-out score every round, so the rule watches the validation subjects.
    # min-delta 1: no gain counts, so patience 1 ends the run after round 2 of 3.
    overrides = "num-server-rounds=3 early-stopping-patience=1 early-stopping-min-delta=1.0 server-eval-every=0"
    config = read_run_config(f"{base} {overrides}")
    assert config.stops_on_validation
    summary = run_centralized(config, 2, tmp_path / "pooled")
    assert sorted(val_dice(tmp_path / "pooled")) == [1, 2]
    assert sorted(held_out_dice(tmp_path / "pooled")) == [2]  # the final model only
    assert summary["final"]["round"] == 2 and "validation mean Dice" in summary["stopped_early"]["reason"]


def test_a_held_out_monitor_needs_a_held_out_score_every_round():
    with pytest.raises(ConfigError, match="'early-stopping-monitor'.*server-eval-every=1"):
        read_run_config("early-stopping-patience=2 early-stopping-monitor='heldout' server-eval-every=2")
    assert read_run_config("early-stopping-patience=2 server-eval-every=3").stops_on_validation  # auto


def test_the_validation_monitor_needs_sites_that_validate():
    with pytest.raises(ConfigError, match="early-stopping-monitor.*fraction-evaluate > 0"):
        read_run_config("early-stopping-patience=2 early-stopping-monitor='validation' fraction-evaluate=0.0")
    with pytest.raises(ConfigError, match="early-stopping-monitor"):
        read_run_config("early-stopping-patience=2 early-stopping-monitor='test'")
