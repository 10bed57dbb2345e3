"""scripts/compare.py: the table's arithmetic on known numbers, and the reduced study end to end."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests import REPO


def load_compare():
    spec = importlib.util.spec_from_file_location("compare", REPO / "scripts" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def final(et, tc, wt, hd=10.0):
    return {"dice_et": et, "dice_tc": tc, "dice_wt": wt, "hd95_et": hd, "hd95_tc": hd, "hd95_wt": hd}


def test_ratio_to_pooled_and_gain_over_mean_local_are_paired_by_seed():
    compare = load_compare()
    record = compare.RunRecord
    records = [
        record("pooled", 0, "", 10.0, True, final=final(0.6, 0.6, 0.6)),
        record("pooled", 1, "", 12.0, True, final=final(0.8, 0.8, 0.8)),
        record("local", 0, "", 5.0, True, final=final(0.3, 0.3, 0.3), per_site_final={"site-1": final(0.2, 0.2, 0.2)}),
        record("local", 1, "", 5.0, True, final=final(0.4, 0.4, 0.4), per_site_final={"site-1": final(0.5, 0.5, 0.5)}),
        record("fedavg", 0, "", 30.0, True, final=final(0.3, 0.6, 0.9)),  # mean 0.6
        record("fedavg", 1, "", 50.0, True, final=final(0.6, 0.6, 0.6)),
        record("fedbn", 0, "", 1.0, False, error="simulate.py exit 1"),  # a failed run is left out
    ]
    rows = {row["method"]: row for row in compare.comparison_rows(records, [0, 1])}
    assert list(rows) == ["pooled", "local", "local site-1", "fedavg"]
    fedavg = rows["fedavg"]
    assert fedavg["mean_dice"] == pytest.approx(0.6)
    assert fedavg["ratio_to_pooled"] == pytest.approx((0.6 / 0.6 + 0.6 / 0.8) / 2)
    assert fedavg["gain_over_mean_local"] == pytest.approx(((0.6 - 0.3) + (0.6 - 0.4)) / 2)
    assert fedavg["relative_gain_over_mean_local"] == pytest.approx((0.6 / 0.3 - 1 + 0.6 / 0.4 - 1) / 2)
    assert fedavg["dice_et"] == pytest.approx(0.45) and fedavg["dice_et_sd"] == pytest.approx(0.2121, abs=1e-4)
    assert fedavg["wall_s"] == 40.0
    assert rows["pooled"]["ratio_to_pooled"] == 1.0 and rows["local"]["gain_over_mean_local"] == 0.0
    assert rows["local site-1"]["mean_dice"] == pytest.approx(0.35)


@pytest.mark.e2e
def test_reduced_study_writes_table_csv_json_and_plot(tmp_path):
    out = tmp_path / "study"
    completed = subprocess.run(
        [sys.executable, "scripts/compare.py", "--out", str(out), "--reduced"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "FEDTUMOR_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    with (out / "comparison.csv").open() as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"pooled", "local", "local site-1", "local site-2", "fedavg"}
    assert float(rows["pooled"]["ratio_to_pooled"]) == 1.0
    assert 0.0 <= float(rows["fedavg"]["mean_dice"]) <= 1.0 and float(rows["fedavg"]["wall_s"]) > 0
    table = (out / "comparison.md").read_text()
    assert table.startswith("| method | Dice ET") and "| fedavg |" in table
    report = json.loads((out / "comparison.json").read_text())
    assert all(run["ok"] for run in report["runs"]) and len(report["loadavg_before"]) == 3
    fedavg = next(run for run in report["runs"] if run["method"] == "fedavg")
    assert sorted(map(int, fedavg["mean_dice_per_round"])) == [0, 1]  # Dice per round, initial model included
    assert (out / "dice_per_round.png").stat().st_size > 0
    assert (out / "runs" / "pooled-seed0" / "summary.json").is_file()
