"""`fedtumor strategies benchmark`: its plan and run config, its table and plot from run folders, a real run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedtumor.bench.compare import RunRecord
from fedtumor.bench.compare_study import Study, record_of
from fedtumor.bench.strategy_benchmark import (
    BENCHMARK_FILES,
    HEADERS,
    benchmark_plan,
    benchmark_rows,
    benchmark_run_config,
    display_row,
    run_curve,
    write_benchmark,
)
from fedtumor.cli import app
from fedtumor.core.config import read_run_config
from fedtumor.run.writer import RunWriter
from tests import REPO

FEDTUMOR = str(Path(sys.executable).parent / "fedtumor")  # the console script of this environment


def scores(dice, hd=10.0):
    return {"dice_et": dice, "dice_tc": dice, "dice_wt": dice, "hd95_et": hd, "hd95_tc": hd, "hd95_wt": hd}


def finished_run(run_dir, curve: dict[int, tuple[float, float]], convergence: float) -> RunRecord:
    """A run folder as a FeTS-timed run leaves it: round -> (simulated time, held-out Dice)."""
    writer = RunWriter(run_dir)
    for server_round, (seconds, dice) in curve.items():
        writer.add_metrics(round=server_round, scope="global", split="test", metrics=scores(dice))
        if server_round:
            writer.add_metrics(round=server_round, scope="global", split="train", metrics={"simulated_time_s": seconds})
    last = max(curve)
    writer.write_summary(
        {
            "final": {**scores(curve[last][1]), "round": last},
            "simulated_time_s": curve[last][0],
            "convergence_score": convergence,
            "time_model": "fets",
        }
    )
    return record_of(run_dir.name.split("-")[0], 0, run_dir, 1.0, reused=False)


def test_the_plan_is_fedavg_and_the_plugin_without_baselines_and_the_config_is_fets():
    plan = benchmark_plan("fedprox", seeds=[0, 1], rounds=4, run_config="learning-rate=0.02")
    assert plan.methods == ["fedavg", "fedprox"] and plan.all_methods() == plan.methods and plan.rounds == 4
    assert benchmark_plan("fedavg", seeds=[0]).methods == ["fedavg"]
    assert benchmark_plan("fedavg", seeds=[0]).rounds >= 2  # one round would score only the initial model
    config = read_run_config(benchmark_run_config(plan, REPO / "cohort", REPO / "runs"), REPO)
    assert config.time_model == "fets" and config.fraction_evaluate == 1.0 and config.server_eval
    assert config.num_server_rounds == 4 and config.learning_rate == 0.02


def test_rows_curves_and_files_come_from_the_run_folders(tmp_path):
    records = [
        finished_run(tmp_path / "runs" / "fedprox-seed0", {0: (0.0, 0.1), 1: (3600.0, 0.3), 2: (7200.0, 0.5)}, 0.2),
        finished_run(tmp_path / "runs" / "fedavg-seed0", {0: (0.0, 0.1), 1: (1800.0, 0.4), 2: (5400.0, 0.6)}, 0.3),
        RunRecord("fedprox", 1, "", 1.0, False, error="simulation exit 1"),  # a failed run is left out
    ]
    rows = benchmark_rows(records)
    assert [row["method"] for row in rows] == ["fedavg", "fedprox"]  # the reference first
    fedavg = rows[0]
    assert fedavg["dice_wt"] == pytest.approx(0.6) and fedavg["hd95_et"] == pytest.approx(10.0)
    assert fedavg["simulated_time_s"] == 5400.0 and fedavg["convergence_score"] == 0.3
    assert fedavg["time_model"] == "fets" and rows[1]["seeds"] == 1
    assert display_row(fedavg)[HEADERS.index("simulated h")] == "1.50"
    curve = run_curve(records[1])
    assert curve.times_s == [0.0, 1800.0, 5400.0] and curve.dice == pytest.approx([0.1, 0.4, 0.6])

    study = Study(benchmark_plan("fedprox", [0]), tmp_path, tmp_path / "cohort", "time-model='fets'", REPO)
    assert write_benchmark(study, records, "fedprox") == rows
    assert all((tmp_path / name).stat().st_size > 0 for name in BENCHMARK_FILES)
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["strategy"] == "fedprox" and report["curves"]["fedavg-seed0"]["times_s"][-1] == 5400.0
    assert "| fedavg |" in (tmp_path / "benchmark.md").read_text()
    assert write_benchmark(study, records[2:], "fedprox") == []


def test_cli_unknown_strategy_is_one_line_before_any_run(tmp_path):
    result = CliRunner().invoke(app, ["strategies", "benchmark", "fedmagic", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown strategy 'fedmagic'" in lines[0]
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_benchmark_runs_the_plugin_next_to_fedavg_and_scores_it_the_fets_way(tmp_path):
    out = tmp_path / "bench"
    completed = subprocess.run(
        [FEDTUMOR, "strategies", "benchmark", "fedprox", "--out", str(out), "--rounds", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "FEDTUMOR_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    report = json.loads((out / "benchmark.json").read_text())
    rows = {row["method"]: row for row in report["rows"]}
    assert set(rows) == {"fedavg", "fedprox"}
    for row in rows.values():
        assert row["time_model"] == "fets" and row["simulated_time_s"] > 0
        assert 0.0 <= row["convergence_score"] <= 1.0 and 0.0 <= row["mean_dice"] <= 1.0
    assert (out / "dice_vs_simulated_time.png").stat().st_size > 0
    assert "convergence score" in completed.stdout
