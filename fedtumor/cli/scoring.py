"""`fedtumor evaluate`: score predicted segmentations against references, one pair or two folders.

Folders: PRED_DIR holds ``<ID>.nii.gz`` (what `fedtumor predict` writes, nnU-Net style);
REF_DIR is either a cohort of subject folders in a BraTS layout (the seg file found by
``data_loaders.layouts.discover_subjects``) or a flat folder of ``<ID>.nii.gz``,
``<ID>-seg.nii.gz`` or ``<ID>_seg.nii.gz``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import typer

from fedtumor.cli.common import EXIT_PROBLEMS, app, console, error_console, fail
from fedtumor.core.errors import DataError

_FLAT_NAME = re.compile(r"^(?P<id>.+?)(?:[-_]seg)?\.nii(?:\.gz)?$", re.IGNORECASE)
_PREDICTION_NAME = re.compile(r"^(?P<id>.+?)\.nii(?:\.gz)?$", re.IGNORECASE)
STATUS_OK = "ok"
STATUS_MISSING = "missing prediction (scored as empty)"


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _PREDICTION_NAME.match(p.name)
    )


def prediction_files(folder: Path) -> dict[str, Path]:
    """``{ID: path}`` of the ``<ID>.nii.gz`` files in ``folder``."""
    return {_PREDICTION_NAME.match(p.name)["id"]: p for p in _nifti_files(folder)}


def reference_files(folder: Path) -> dict[str, Path | DataError]:
    """``{ID: seg path}`` of a flat folder or a BraTS cohort; a subject without a seg maps to a DataError."""
    flat = _nifti_files(folder)
    if flat:
        return {_FLAT_NAME.match(p.name)["id"]: p for p in flat}
    from data_loaders.layouts import discover_subjects

    return {
        s.subject_id: s.label if s.label is not None else DataError("no segmentation (seg) file", path=s.folder)
        for s in discover_subjects(folder)
    }


def _print_single(scores: dict, title: str) -> None:
    from rich.table import Table

    metric_names = list(next(iter(scores.values())).keys())
    table = Table(title=title)
    table.add_column("region")
    for name in metric_names:
        table.add_column(name, justify="right")
    for region, values in scores.items():
        table.add_row(region, *(f"{values[name]:.4f}" for name in metric_names))
    console.print(table)


def _score_folders(pred_dir: Path, ref_dir: Path) -> tuple[list[dict], list[str], list[str]]:
    """(per-subject rows, metric columns, predictions without a reference)."""
    from rich.progress import Progress

    from fedtumor.core.brats_scores import score_files_all
    from fedtumor.core.regions import REGIONS

    predictions, references = prediction_files(pred_dir), reference_files(ref_dir)
    rows: list[dict] = []
    columns: list[str] = []
    with Progress(console=error_console, transient=True) as progress:
        for subject in progress.track(sorted(references), description="scoring subjects"):
            reference, prediction = references[subject], predictions.get(subject)
            row = {"subject": subject, "status": STATUS_OK if prediction else STATUS_MISSING}
            try:
                if isinstance(reference, DataError):
                    raise reference
                scores = score_files_all(prediction, reference)
            except DataError as exc:
                row["status"] = f"error: {exc}"
                error_console.print(f"skipped {subject}: {exc}", highlight=False, markup=False, soft_wrap=True)
            else:
                flat = {f"{m}_{r.lower()}": v for r in REGIONS for m, v in scores[r].items()}
                columns = columns or list(flat)
                row.update(flat)
            rows.append(row)
    unmatched = sorted(set(predictions) - set(references))
    return rows, columns, unmatched


def _print_summary(summary: dict, title: str) -> None:
    from rich.table import Table

    from fedtumor.core.leaderboard import STATISTICS

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("n", justify="right")
    for name in STATISTICS:
        table.add_column(name, justify="right")
    for metric, stats in summary.items():
        table.add_row(
            metric, str(stats["n"]), *("-" if math.isnan(stats[s]) else f"{stats[s]:.4f}" for s in STATISTICS)
        )
    console.print(table)


def _evaluate_folders(pred_dir: Path, ref_dir: Path, out: Path, as_json: bool) -> None:
    from fedtumor.core.leaderboard import summarise, summary_path, write_scores_csv, write_summary_csv

    try:
        rows, columns, unmatched = _score_folders(pred_dir, ref_dir)
    except DataError as exc:
        fail(str(exc))
    if not rows:
        fail(f"{ref_dir}: no references found")
    summary = summarise([r for r in rows if not r["status"].startswith("error")], columns)
    write_scores_csv(out, rows, ["subject", "status", *columns])
    write_summary_csv(summary_path(out), summary)
    missing = [r["subject"] for r in rows if r["status"] == STATUS_MISSING]
    errors = [r["subject"] for r in rows if r["status"].startswith("error")]
    if as_json:
        sys.stdout.write(json.dumps({"summary": summary, "missing": missing, "errors": errors}, indent=2) + "\n")
    else:
        _print_summary(summary, f"{len(rows) - len(errors)} subjects scored ({pred_dir} vs {ref_dir})")
        console.print(f"wrote {out} and {summary_path(out)}")
    for label, subjects in (("no prediction (scored as empty)", missing), ("no reference, not scored", unmatched)):
        if subjects:
            error_console.print(f"{label}: {', '.join(subjects)}", highlight=False, markup=False, soft_wrap=True)
    if errors:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command()
def evaluate(
    prediction: Path = typer.Argument(..., help="Predicted segmentation NIfTI, or a folder of <ID>.nii.gz."),
    reference: Path = typer.Argument(..., help="Reference segmentation NIfTI, or a folder of references."),
    out: Path = typer.Option(Path("scores.csv"), "--out", help="Folders only: per-subject CSV (summary beside it)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Score segmentations: legacy Dice/HD95/sensitivity/specificity plus NSD and lesion-wise Dice/HD95.

    Two files print one table per region; two folders write a per-subject CSV and its
    leaderboard summary (mean, std, median, 25th and 75th percentile) next to it.
    """
    from fedtumor.core.brats_scores import score_files_all

    for path in (prediction, reference):
        if not path.exists():
            fail(f"{path}: not found")
    if prediction.is_dir() != reference.is_dir():
        fail(f"{prediction} and {reference}: give two files or two folders")
    if prediction.is_dir():
        _evaluate_folders(prediction, reference, out, as_json)
        return
    try:
        scores = score_files_all(prediction, reference)
    except DataError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(scores, indent=2) + "\n")
        return
    _print_single(scores, f"{prediction.name} vs {reference.name}")
