"""The leaderboard summary of per-subject scores, and the two CSV files `fedtumor evaluate` writes.

Summary statistics per metric column, over the subjects that have a value (a subject whose
files could not be read has none and is left out; a missing prediction is scored as an
empty one beforehand, as BraTS does, so it counts):

* ``mean``; ``std``, the sample standard deviation (``ddof=1``, as pandas' ``DataFrame.std``
  in the official ``brats-evaluation`` parser; NaN for a single subject);
* ``median``, ``q25``, ``q75``: percentiles with numpy's default linear interpolation
  (pandas' ``quantile`` default too).

Each region's metric is summarised on its own (``lesion_dice_et`` over subjects), never
averaged across regions.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

STATISTICS: tuple[str, ...] = ("mean", "std", "median", "q25", "q75")


def summarise(rows: Sequence[Mapping[str, float]], columns: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{column: {"n", "mean", "std", "median", "q25", "q75"}}`` over ``rows``, NaN values skipped.

    Example:
        >>> summary = summarise([{"dice_et": 0.5}, {"dice_et": 1.0}, {"dice_et": 0.0}], ["dice_et"])
        >>> summary["dice_et"]["median"], summary["dice_et"]["q75"]
        (0.5, 0.75)
    """
    if isinstance(columns, str):
        raise TypeError("columns must be a sequence of column names, not one string")
    summary: dict[str, dict[str, float]] = {}
    for column in columns:
        values = np.array([float(row[column]) for row in rows if column in row], dtype=float)
        values = values[~np.isnan(values)]
        if values.size == 0:
            summary[column] = {"n": 0, **{name: math.nan for name in STATISTICS}}
            continue
        summary[column] = {
            "n": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
            "median": float(np.median(values)),
            "q25": float(np.percentile(values, 25)),
            "q75": float(np.percentile(values, 75)),
        }
    return summary


def summary_path(scores_csv: Path | str) -> Path:
    """``scores.csv`` -> ``scores_summary.csv`` in the same folder."""
    scores_csv = Path(scores_csv)
    return scores_csv.with_name(f"{scores_csv.stem}_summary.csv")


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_scores_csv(path: Path | str, rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> Path:
    """One row per subject with ``columns`` (missing or NaN values as empty cells)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column, math.nan)) for column in columns])
    return path


def write_summary_csv(path: Path | str, summary: Mapping[str, Mapping[str, float]]) -> Path:
    """One row per metric: ``metric, n, mean, std, median, q25, q75``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric", "n", *STATISTICS])
        for metric, stats in summary.items():
            writer.writerow([metric, stats["n"], *(_cell(float(stats[name])) for name in STATISTICS)])
    return path
