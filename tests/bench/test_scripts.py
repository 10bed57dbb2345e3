"""The scripts run: every one answers --help, and the aggregation benchmark covers every strategy."""

import json
import subprocess
import sys

import pytest

from fedtumor.federation.registry import load_registry
from tests import REPO

SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_answers_help(script):
    completed = subprocess.run(
        [sys.executable, f"scripts/{script}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert "usage:" in completed.stdout


def test_bench_aggregation_times_every_installed_strategy(tmp_path):
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "scripts/bench_aggregation.py", "--clients", "3", "--model", "unet", "--base-filters", "4",
         "--repeats", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads(out.read_text())
    rows = {row["strategy"]: row for row in record["rows"]}
    assert set(rows) == {"flower-fedavg", *load_registry().plugins}
    assert rows["flower-fedavg"]["ratio_to_fedavg"] == 1.0
    # Every aggregate is a new model: its allocations peak at least at one float32 copy of the parameters.
    one_model_mib = record["parameters"] * 4 / 2**20
    assert record["parameters"] > 0
    assert all(row["seconds"] > 0 and row["peak_mib"] >= one_model_mib for row in rows.values()), rows
    assert {name for name, row in rows.items() if row["robust"]} == {"fedmedian", "fedtrimmedavg", "krum"}
    # SCAFFOLD's replies carry its control-variate updates: its other baseline is Flower's FedAvg over those.
    assert rows["scaffold"]["ratio_to_fedavg_same_replies"] < rows["scaffold"]["ratio_to_fedavg"]
    assert rows["fedavg"]["ratio_to_fedavg_same_replies"] == rows["fedavg"]["ratio_to_fedavg"]
