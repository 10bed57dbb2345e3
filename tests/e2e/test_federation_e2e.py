"""One short, real federation: `flwr run` through a local SuperLink, Ray-simulated sites.

Three sites on a synthetic cohort; one site's data is broken, so it must reply with an
error naming the file while the other two still train and the run completes.
"""

import json
import math
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.deployment.processes import command_lines
from tests import REPO
from tests.conftest import copy_cohort
from tests.e2e.simulation import TINY_MODEL, output_of, simulate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def federation(tmp_path_factory, three_site_cohort):
    root = tmp_path_factory.mktemp("e2e")
    cohort = copy_cohort(three_site_cohort, root / "cohort")
    partitions = pd.read_csv(cohort / "partitioning.csv")
    broken_subject = partitions.loc[partitions["Partition_ID"] == 3, "Subject_ID"].iloc[0]
    broken_file = cohort / broken_subject / f"{broken_subject}_flair.nii.gz"
    broken_file.write_bytes(broken_file.read_bytes()[:1000])  # a truncated upload
    flwr_home = root / "flwr-home"
    env = {**os.environ, "FEDTUMOR_HOME": str(root / "home")}
    run_config = f"num-server-rounds=2 data-dir='{cohort}' output-dir='{root / 'runs'}' run-name='e2e' {TINY_MODEL}"
    completed = simulate(3, run_config, root / "home", flwr_home)
    return {
        "completed": completed,
        "run_dir": root / "runs" / "e2e",
        "cohort": cohort,
        "broken_file": broken_file,
        "flwr_home": flwr_home,
        "env": env,
    }


def test_run_completes_and_leaves_no_process(federation):
    completed = federation["completed"]
    assert completed.returncode == 0, output_of(completed)
    assert "status finished:completed" in completed.stdout
    assert list(command_lines(str(federation["flwr_home"])).values()) == []


def test_run_folder_holds_config_metrics_summary_model_and_plots(federation):
    run_dir = federation["run_dir"]
    for name in (
        "config.json",
        "metrics.csv",
        "summary.json",
        "final_model.pt",
        "best_model.pt",
        "dice_per_round.png",
        "hd95_per_round.png",
        "site_dice.png",
        "prediction_overlay.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["num-server-rounds"] == 2
    assert config["versions"]["flwr"] == "1.41.0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strategy"] == "fedavg" and summary["rounds"] == 2 and summary["wall_time_s"] > 0
    for name in ("dice_et", "dice_tc", "dice_wt", "hd95_et", "hd95_tc", "hd95_wt"):
        assert math.isfinite(summary["final"][name]), name
        assert 0.0 <= summary["final"][name] <= (1.0 if name.startswith("dice") else 373.1287)


def test_metrics_have_every_round_site_and_split(federation):
    metrics = pd.read_csv(federation["run_dir"] / "metrics.csv")
    assert list(metrics.columns) == ["round", "scope", "split", "metric", "value"]
    assert np.isfinite(metrics["value"]).all()
    test = metrics[(metrics.scope == "global") & (metrics.split == "test") & (metrics.metric == "dice_wt")]
    assert sorted(test["round"]) == [0, 1, 2]
    trained = metrics[(metrics.split == "train") & (metrics.metric == "loss")]
    assert set(trained.scope) == {"site-1", "site-2"}
    assert sorted(trained["round"].unique()) == [1, 2]
    validated = metrics[(metrics.split == "val") & (metrics.metric == "hd95_wt")]
    assert {"site-1", "site-2", "global"} <= set(validated.scope)


def test_broken_site_reports_the_file_and_the_round_goes_on(federation):
    summary = json.loads((federation["run_dir"] / "summary.json").read_text())
    failures = summary["failed_replies"]
    assert {f["round"] for f in failures if f["phase"] == "train"} == {1, 2}
    assert all(federation["broken_file"].name in f["error"] for f in failures)
    assert {f["site"] for f in failures} == {"site-3"}  # its error reply said which site it is
    assert set(summary["sites"]) == {"site-1", "site-2"}


def test_report_and_predict_use_the_run(federation, tmp_path, monkeypatch):
    runner = CliRunner()
    report = runner.invoke(app, ["report", str(federation["run_dir"])])
    assert report.exit_code == 0, report.output
    assert "fedavg" in report.output
    heldout = pd.read_csv(federation["cohort"] / "heldout.csv")["Subject_ID"].iloc[0]
    subject_dir = federation["cohort"] / heldout
    out = tmp_path / "pred.nii.gz"
    predict = runner.invoke(
        app, ["predict", "--model", str(federation["run_dir"]), "--subject", str(subject_dir), "--out", str(out)]
    )
    assert predict.exit_code == 0, predict.output
    prediction, reference = nib.load(out), nib.load(subject_dir / f"{heldout}_t1.nii.gz")
    assert prediction.shape == reference.shape
    assert np.allclose(prediction.affine, reference.affine)
    assert set(np.unique(np.asarray(prediction.dataobj)).tolist()) <= {0, 1, 2, 4}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("num-server-round=2", "error: unknown run-config key 'num-server-round' (did you mean 'num-server-rounds'?)"),
        ("strategy='fedsgd'", "error: run-config key 'strategy': unknown strategy 'fedsgd'; available: "),
        ("strategy='fedprox' strategy-config='mu=1'", "error: run-config key 'strategy-config': 'mu' is not a"),
    ],
)
def test_bad_run_config_is_refused_before_anything_starts(overrides, message):
    completed = subprocess.run(
        [sys.executable, "scripts/simulate.py", "--run-config", overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), completed.stderr
