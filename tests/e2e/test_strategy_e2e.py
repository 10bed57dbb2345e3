"""A FeTS-winning strategy in a real `flwr run` simulation: weights from loss decrease, simulated time."""

import json
import math

import pandas as pd
import pytest

from tests.e2e.simulation import TINY_MODEL, output_of, simulate

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # FedPIDAvg's arithmetic: tests/strategies; CI's time


@pytest.fixture(scope="module")
def fedpidavg_run(tmp_path_factory, two_site_cohort):
    root = tmp_path_factory.mktemp("pid")
    run_config = (
        f"strategy='fedpidavg' num-server-rounds=2 data-dir='{two_site_cohort}' output-dir='{root / 'runs'}' "
        f"run-name='pid' {TINY_MODEL}"
    )
    completed = simulate(2, run_config, root / "home", root / "flwr-home")
    assert completed.returncode == 0, output_of(completed)
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
