"""A FeTS-winning strategy in a real `flwr run` simulation: weights from loss decrease, simulated time."""

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from data_loaders.synthetic import generate_cohort
from tests import REPO

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fedpidavg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pid")
    cohort = root / "cohort"
    generate_cohort(cohort, n_sites=2, n_subjects=6, seed=11, shape=64, n_test=2, progress=False)
    run_config = (
        f"strategy='fedpidavg' num-server-rounds=2 data-dir='{cohort}' output-dir='{root / 'runs'}' "
        "run-name='pid' patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4"
    )
    completed = subprocess.run(
        [sys.executable, "scripts/simulate.py", "--num-supernodes", "2", "--run-config", run_config],
        cwd=REPO,
        env={**os.environ, "FEDTUMOR_HOME": str(root / "home")},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return root / "runs" / "pid"


def test_summary_names_the_strategy_and_reports_convergence(fedpidavg_run):
    summary = json.loads((fedpidavg_run / "summary.json").read_text())
    assert summary["strategy"] == "fedpidavg"
    assert summary["strategy_parameters"]["alpha"] == 0.45
    assert summary["simulated_time_s"] > 0
    assert 0.0 <= summary["convergence_score"] <= 1.0 and math.isfinite(summary["convergence_score"])


def test_sites_reported_the_losses_the_weights_need(fedpidavg_run):
    metrics = pd.read_csv(fedpidavg_run / "metrics.csv")
    train = metrics[metrics.split == "train"]
    for name in ("loss_before", "loss_after"):
        rows = train[train.metric == name]
        assert set(rows.scope) == {"site-1", "site-2"} and (rows.value > 0).all(), name
    elapsed = metrics[(metrics.scope == "global") & (metrics.metric == "simulated_time_s")]
    assert sorted(elapsed["round"]) == [0, 1, 2]
    assert elapsed.sort_values("round")["value"].is_monotonic_increasing
