"""One short, real FedBN federation that exercises what a study needs, end to end.

Early stopping ends it, MLflow tracks it, its sites score their personal models, and cross-site
evaluation scores every model on every site after the last round. One Ray simulation carries
all four (each start costs half a minute); the rules themselves are tested in-process, in
tests/run/test_early_stopping.py, test_tracking.py, test_cross_site.py and
tests/client_app/test_personal.py.

min-delta 1 makes the stop deterministic: round 1 always improves on nothing, and no mean Dice
can beat it by more than 1, so patience 1 ends the 3-round run after round 2, whatever is learnt.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.federation.cross_site import STAGE_PERSONAL, STAGE_SCORE
from fedtumor.run.audit import verify_run
from fedtumor.run.checkpoint import load_checkpoint
from fedtumor.run.cross_site import CROSS_SITE_METRICS, GLOBAL_MODEL, personal_model, read_cross_site
from fedtumor.run.files import AUDIT_FILE, CROSS_SITE_PNG, CROSS_SITE_SCORES_FILE, MODEL_FILES, TRACKING_DB_FILE
from fedtumor.run.tracking import default_tracking_uri, metric_key, read_tracking_record
from fedtumor.run.writer import read_metrics
from tests.e2e.simulation import TINY_MODEL, output_of, simulate

pytestmark = pytest.mark.e2e

SITES = ["site-1", "site-2"]


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, two_site_cohort):
    root = tmp_path_factory.mktemp("study-features")
    run_config = (
        f"strategy='fedbn' num-server-rounds=3 data-dir='{two_site_cohort}' output-dir='{root / 'runs'}' "
        f"run-name='features' {TINY_MODEL} early-stopping-patience=1 early-stopping-min-delta=1.0 "
        "tracking='mlflow' cross-site-eval=true personal-heldout='every-round'"
    )
    completed = simulate(2, run_config, root / "home", root / "flwr-home", timeout=600)
    assert completed.returncode == 0, output_of(completed)
    run_dir = root / "runs" / "features"
    return root, run_dir, json.loads((run_dir / "summary.json").read_text())


def test_early_stopping_ends_the_run_after_round_2_with_a_completed_summary(study_run):
    _, run_dir, summary = study_run
    assert summary["status"] == "completed" and summary["rounds"] == 3
    assert summary["stopped_early"] == {
        "round": 2,
        "best_round": 1,
        "reason": "no improvement of held-out mean Dice > 1.0 for 1 rounds",
    }
    assert summary["final"]["round"] == 2
    assert load_checkpoint(run_dir / "final_model.pt")[1]["round"] == 2
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["round"].max() == 2
    patches = metrics[(metrics.split == "train") & (metrics.metric == "num_patches") & (metrics.scope != "global")]
    assert summary["patches_seen"] == patches["value"].sum() > 0
    assert verify_run(run_dir, MODEL_FILES).intact
    run_end = json.loads((run_dir / AUDIT_FILE).read_text().splitlines()[-1])
    assert run_end["event"] == "run-end" and run_end["stopped_early"]["round"] == 2


def test_sites_report_their_personal_scores_next_to_the_global_ones(study_run):
    _, _, summary = study_run
    personalised = summary["personalised"]
    assert sorted(personalised["sites"]) == SITES and personalised["personal_heldout"] == "measured"
    for site in SITES:
        scores = personalised["sites"][site]
        assert scores["round"] == 2 and scores["num_val"] > 0
        for part in ("global_val", "personal_val", "personal_heldout"):
            assert 0.0 <= scores[part]["mean_dice"] <= 1.0, (site, part)
    assert 0.0 <= personalised["mean"]["personal_val"]["mean_dice"] <= 1.0


def test_mlflow_reads_back_exactly_what_metrics_csv_holds(study_run):
    _, run_dir, _ = study_run
    assert (run_dir / TRACKING_DB_FILE).is_file()
    client = MlflowClient(tracking_uri=default_tracking_uri(run_dir))
    run = client.get_run(read_tracking_record(run_dir)["run_id"])
    assert run.info.run_name == "features" and run.info.status == "FINISHED"
    assert run.data.params["num-server-rounds"] == "3" and run.data.params["tracking"] == "mlflow"
    rows = read_metrics(run_dir)
    assert {"global", *SITES} <= set(rows["scope"]) and set(rows["round"]) == {0, 1, 2}
    keys = set()
    for (scope, split, name), group in rows.groupby(["scope", "split", "metric"]):
        key = metric_key(scope, split, name)
        keys.add(key)
        logged = [(point.step, point.value) for point in client.get_metric_history(run.info.run_id, key)]
        written = list(zip(group["round"].tolist(), group["value"].tolist()))
        same = len(logged) == len(written) and all(
            a_step == b_step and (a == b or (math.isnan(a) and math.isnan(b)))
            for (a_step, a), (b_step, b) in zip(logged, written)
        )
        assert same, (key, logged, written)
    assert set(run.data.metrics) == keys  # nothing logged that metrics.csv does not hold
    assert "test/dice_wt" in keys and "val/site-1/dice_wt" in keys  # held-out and per-site


def test_cross_site_matrix_holds_the_global_and_each_personal_model(study_run):
    _, run_dir, summary = study_run
    matrix = read_cross_site(run_dir)
    assert list(matrix.index) == [GLOBAL_MODEL, *(personal_model(site) for site in SITES)]
    assert list(matrix.columns) == SITES
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in matrix.loc[GLOBAL_MODEL])
    for site in SITES:  # sharing off: a personal model is scored by its own site only
        assert math.isfinite(matrix.loc[personal_model(site), site])
        assert all(math.isnan(matrix.loc[personal_model(site), other]) for other in SITES if other != site)
    assert set(pd.read_csv(run_dir / CROSS_SITE_SCORES_FILE).metric) == set(CROSS_SITE_METRICS)
    assert (run_dir / CROSS_SITE_PNG).stat().st_size > 0
    assert summary["cross_site"]["mean_dice"][GLOBAL_MODEL] == pytest.approx(dict(matrix.loc[GLOBAL_MODEL]))


def test_with_sharing_off_the_sites_sent_scores_and_no_model(study_run):
    _, run_dir, _ = study_run
    entries = [json.loads(line) for line in (run_dir / AUDIT_FILE).read_text().splitlines()]
    cross_site = [entry for entry in entries if entry["event"] == "cross-site"]
    assert len(cross_site) == 1 and cross_site[0]["share_personal"] is False
    replies = cross_site[0]["replies"]
    assert STAGE_PERSONAL not in replies  # the personal models were never asked for
    assert sorted(replies[STAGE_SCORE]) == SITES
    for site, records in replies[STAGE_SCORE].items():
        assert records["array_records"] == [], site
        assert any(name.startswith("scores:") for name in records["metric_records"]), site


def test_cross_site_command_scores_the_saved_global_model_to_the_same_row(study_run, monkeypatch):
    root, run_dir, _ = study_run
    monkeypatch.setenv("FEDTUMOR_HOME", str(root / "home"))
    in_run = read_cross_site(run_dir)
    result = CliRunner().invoke(app, ["cross-site", str(run_dir), "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "personal models" in result.output  # says what it cannot score
    rescored = read_cross_site(run_dir)
    assert list(rescored.index) == [GLOBAL_MODEL]
    assert rescored.loc[GLOBAL_MODEL].to_numpy() == pytest.approx(in_run.loc[GLOBAL_MODEL].to_numpy())


def test_scaffold_with_adam_is_refused_before_anything_starts(tmp_path, two_site_cohort):
    run_config = f"data-dir='{two_site_cohort}' output-dir='{tmp_path / 'runs'}' strategy='scaffold' {TINY_MODEL}"
    refused = simulate(2, run_config, tmp_path / "home", tmp_path / "flwr")
    assert refused.returncode == 2, output_of(refused)
    assert "run-config key 'optimizer'" in output_of(refused) and "set optimizer='sgd'" in output_of(refused)
