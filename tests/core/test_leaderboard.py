"""Leaderboard summary statistics and the two CSV files; values worked out by hand."""

from __future__ import annotations

import csv
import math

import pytest

from fedtumor.core.leaderboard import STATISTICS, summarise, summary_path, write_scores_csv, write_summary_csv


def test_summary_statistics_of_four_subjects():
    rows = [{"dice_et": v} for v in (1.0, 2.0, 3.0, 4.0)]
    stats = summarise(rows, ["dice_et"])["dice_et"]
    # Sample std: squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, / 3.
    assert stats["n"] == 4
    assert stats["mean"] == 2.5
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3))
    assert stats["median"] == 2.5
    # Linear interpolation at positions 0.75 and 2.25 of the sorted values.
    assert stats["q25"] == pytest.approx(1.75)
    assert stats["q75"] == pytest.approx(3.25)


def test_nan_values_are_skipped_and_one_subject_has_no_std():
    stats = summarise([{"x": 0.5}, {"x": math.nan}, {}], ["x"])["x"]
    assert stats["n"] == 1 and stats["mean"] == 0.5 and math.isnan(stats["std"])
    nothing = summarise([{"x": math.nan}], ["x"])["x"]
    assert nothing["n"] == 0 and all(math.isnan(nothing[s]) for s in STATISTICS)


def test_columns_must_not_be_a_string():
    with pytest.raises(TypeError):
        summarise([{"x": 1.0}], "x")


def test_csv_files_round_trip(tmp_path):
    rows = [{"subject": "a", "status": "ok", "x": 0.25}, {"subject": "b", "status": "error: bad", "x": math.nan}]
    scores = write_scores_csv(tmp_path / "out" / "scores.csv", rows, ["subject", "status", "x"])
    with scores.open() as handle:
        read = list(csv.DictReader(handle))
    assert [r["x"] for r in read] == ["0.25", ""]
    assert summary_path(scores) == tmp_path / "out" / "scores_summary.csv"
    write_summary_csv(summary_path(scores), summarise(rows[:1], ["x"]))
    with summary_path(scores).open() as handle:
        summary = list(csv.DictReader(handle))
    assert summary == [
        {"metric": "x", "n": "1", "mean": "0.25", "std": "", "median": "0.25", "q25": "0.25", "q75": "0.25"}
    ]
