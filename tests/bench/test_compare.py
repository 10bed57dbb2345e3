"""The comparison study: the table's arithmetic on known numbers, its files from run folders, the reduced study."""

import csv
import json
import os
import subprocess
import sys

import pytest

from fedtumor.bench.compare import RunRecord, comparison_rows
from fedtumor.bench.compare_study import STUDY_FILES, Study, StudyPlan, record_of, reusable, write_study_outputs
from fedtumor.bench.study_records import dice_per_round
from fedtumor.run.files import SUMMARY_FILE
from fedtumor.run.writer import RunWriter
from tests import REPO


def final(et, tc, wt, hd=10.0):
    return {"dice_et": et, "dice_tc": tc, "dice_wt": wt, "hd95_et": hd, "hd95_tc": hd, "hd95_wt": hd}


def test_ratio_to_pooled_and_gain_over_mean_local_are_paired_by_seed():
    records = [
        RunRecord("pooled", 0, "", 10.0, True, final=final(0.6, 0.6, 0.6)),
        RunRecord("pooled", 1, "", 12.0, True, final=final(0.8, 0.8, 0.8)),
        RunRecord(
            "local", 0, "", 5.0, True, final=final(0.3, 0.3, 0.3), per_site_final={"site-1": final(0.2, 0.2, 0.2)}
        ),
        RunRecord(
            "local", 1, "", 5.0, True, final=final(0.4, 0.4, 0.4), per_site_final={"site-1": final(0.5, 0.5, 0.5)}
        ),
        RunRecord("fedavg", 0, "", 30.0, True, final=final(0.3, 0.6, 0.9)),  # mean 0.6
        RunRecord("fedavg", 1, "", 50.0, True, final=final(0.6, 0.6, 0.6)),
        RunRecord("fedbn", 0, "", 1.0, False, error="simulation exit 1"),  # a failed run is left out
    ]
    rows = {row["method"]: row for row in comparison_rows(records)}
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


def test_without_baselines_the_rows_have_no_ratio_and_no_gain():
    rows = comparison_rows([RunRecord("fedavg", 0, "", 3.0, True, final=final(0.3, 0.6, 0.9))])
    assert [row["method"] for row in rows] == ["fedavg"]
    assert rows[0]["ratio_to_pooled"] is None and rows[0]["gain_over_mean_local"] is None
    assert rows[0]["mean_dice_sd"] is None  # one seed: no standard deviation


def _finished_run(run_dir, dice_per_round):
    writer = RunWriter(run_dir)
    for server_round, dice in dice_per_round.items():
        writer.add_metrics(round=server_round, scope="global", split="test", metrics=final(dice, dice, dice))
    last = dice_per_round[max(dice_per_round)]
    writer.write_summary({"final": {**final(last, last, last), "round": max(dice_per_round)}})


def test_a_finished_run_is_read_and_reused_with_its_wall_time_and_a_half_written_one_is_redone(tmp_path):
    run_dir = tmp_path / "runs" / "fedavg-seed0"
    _finished_run(run_dir, {0: 0.1, 1: 0.4})
    record = record_of("fedavg", 0, run_dir, 12.5, reused=False)
    assert record.final == final(0.4, 0.4, 0.4) and record.mean_dice_per_round == pytest.approx({0: 0.1, 1: 0.4})
    assert reusable(run_dir)
    assert record_of("fedavg", 0, run_dir, 0.0, reused=True).wall_s == 12.5  # the time it took when it ran
    half = tmp_path / "runs" / "fedprox-seed0"
    RunWriter(half).add_metrics(round=0, scope="global", split="test", metrics=final(0.1, 0.1, 0.1))
    assert not reusable(half) and not half.exists()


def test_validation_curves_of_a_federation_fedbn_and_the_mean_local_model(tmp_path):
    fed = RunWriter(tmp_path / "fedbn")
    for server_round, (global_dice, personal_dice) in {1: (0.2, 0.5), 2: (0.3, 0.7)}.items():
        personal = {f"personal_{k}": v for k, v in final(personal_dice, personal_dice, personal_dice).items()}
        fed.add_metrics(
            round=server_round, scope="global", split="val", metrics={**final(*[global_dice] * 3), **personal}
        )
    assert dice_per_round(fed.run_dir, {}, "val") == pytest.approx({1: 0.2, 2: 0.3})
    assert dice_per_round(fed.run_dir, {}, "val", personal=True) == pytest.approx({1: 0.5, 2: 0.7})
    # Local: site-1 (3 validation subjects) stopped after round 1, site-2 (1 subject) ran 3 rounds.
    local = tmp_path / "local"
    for site, curve in (("site-1", {1: 0.4}), ("site-2", {1: 0.0, 2: 0.8, 3: 0.6})):
        writer = RunWriter(local / site)
        for server_round, dice in curve.items():
            writer.add_metrics(round=server_round, scope="global", split="val", metrics=final(dice, dice, dice))
    summary = {"per_site_val": {"site-1": {"num_val": 3}, "site-2": {"num_val": 1}}}
    assert dice_per_round(local, summary, "val") == pytest.approx({1: 0.3, 2: 0.5, 3: 0.45})  # site-1 held at 0.4


def test_study_outputs_hold_the_table_and_every_run(tmp_path):
    plan = StudyPlan(sites=2, subjects=6, test_subjects=1, cohort_seed=0, seeds=[0], methods=["fedavg"], rounds=1)
    study = Study(plan, tmp_path, tmp_path / "cohort", "num-server-rounds=1", REPO)
    for name, dice in (("pooled-seed0", 0.8), ("fedavg-seed0", 0.4)):
        _finished_run(tmp_path / "runs" / name, {0: 0.1, 1: dice})
    records = [
        record_of(n.split("-")[0], 0, tmp_path / "runs" / n, 1.0, False) for n in ("pooled-seed0", "fedavg-seed0")
    ]
    rows = write_study_outputs(study, records, "compare.main(...)", {"sites": 2}, 0.0, (0.0, 0.0, 0.0))
    assert [row["method"] for row in rows] == ["pooled", "fedavg"]
    assert rows[1]["ratio_to_pooled"] == pytest.approx(0.5)
    assert all((tmp_path / name).stat().st_size > 0 for name in STUDY_FILES)
    report = json.loads((tmp_path / "comparison.json").read_text())
    assert report["run_config"] == "num-server-rounds=1" and [r["method"] for r in report["runs"]] == [
        "pooled",
        "fedavg",
    ]
    assert write_study_outputs(study, [RunRecord("fedavg", 0, "", 1.0, False)], "", {}, 0.0, (0, 0, 0)) == []


@pytest.mark.e2e
@pytest.mark.slow  # 1.5-3 min of CI's 15; the study's tables, statistics and plots are tested above, without runs
def test_reduced_study_writes_table_csv_json_and_plot(tmp_path):
    out = tmp_path / "study"
    completed = subprocess.run(
        [sys.executable, "scripts/compare.py", "--out", str(out), "--profile", "reduced"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "FEDTUMOR_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    with (out / "comparison.csv").open() as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"pooled", "local", "local site-1", "local site-2", "fedavg", "fedavg-ft"}
    assert float(rows["pooled"]["ratio_to_pooled"]) == 1.0
    assert 0.0 <= float(rows["fedavg"]["mean_dice"]) <= 1.0 and float(rows["fedavg"]["wall_s"]) > 0
    table = (out / "comparison.md").read_text()
    assert table.startswith("| method | stop round | patches | Dice ET") and "| fedavg |" in table
    assert "| fedavg - mean local-only model |" in table and "| fedavg-ft |" in table  # paired, personalised
    report = json.loads((out / "comparison.json").read_text())
    assert all(run["ok"] for run in report["runs"]) and len(report["loadavg_before"]) == 3
    fedavg = next(run for run in report["runs"] if run["method"] == "fedavg")
    rounds = sorted(map(int, fedavg["mean_dice_per_round"]))
    assert rounds == list(range(1, fedavg["stop_round"] + 1))  # validation Dice per round: what it stops on
    fedavg_rows = csv.DictReader((out / "runs" / "fedavg-seed0" / "metrics.csv").open())
    heldout_rounds = {int(row["round"]) for row in fedavg_rows if row["split"] == "test"}
    assert heldout_rounds == {fedavg["stop_round"]}  # the held-out set is scored once, on the final model
    assert len(fedavg["per_subject"]) == 2 and fedavg["site_val_dice"] is not None  # 2 test subjects; validation
    fine_tuned = next(run for run in report["runs"] if run["method"] == "fedavg-ft")
    assert fine_tuned["personal"]["personal_val"] is not None and fine_tuned["patches_seen"] > fedavg["patches_seen"]
    assert report["heatmaps"] and all((out / name).stat().st_size > 0 for name in report["heatmaps"])
    assert (out / "dice_per_round.png").stat().st_size > 0
    assert (out / "runs" / "pooled-seed0" / SUMMARY_FILE).is_file()
