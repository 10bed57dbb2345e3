"""Data commands: make a synthetic cohort, check a site's data, score, report and predict."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer

from fedtumor.cli.common import EXIT_PROBLEMS, app, console, fail
from fedtumor.core.errors import ConfigError, DataError


class SynthShape(str, Enum):
    s64 = "64"
    s96 = "96"
    s128 = "128"


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the cohort into."),
    sites: int = typer.Option(4, "--sites", min=1, help="Number of sites (partitions)."),
    subjects: int = typer.Option(24, "--subjects", min=1, help="Training subjects over all sites."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same cohort."),
    shape: SynthShape = typer.Option(SynthShape.s64, "--shape", help="Edge length of the cubic volumes."),
    test_subjects: int = typer.Option(
        None, "--test-subjects", min=1, help="Held-out test subjects no site trains on (default: about 20%)."
    ),
) -> None:
    """Write a synthetic multi-site cohort in the BraTS 2021 layout plus partitioning.csv."""
    from data_loaders.synthetic import generate_cohort

    try:
        info = generate_cohort(
            out, n_sites=sites, n_subjects=subjects, seed=seed, shape=int(shape.value), n_test=test_subjects
        )
    except (DataError, ConfigError, ValueError) as exc:
        fail(str(exc))
    state = "reused cached" if info.cached else "wrote"
    console.print(
        f"{state} cohort at {info.root}: {info.n_subjects} site subjects over {info.n_sites} sites, "
        f"{info.n_test} held-out test subjects; montage {info.montage}"
    )


@app.command("check-data")
def check_data(
    data_dir: Path = typer.Argument(..., help="A site folder (or a whole cohort) in a BraTS layout."),
    partitions: Path = typer.Option(None, "--partitions", help="FeTS partition CSV to check against."),
) -> None:
    """Validate every subject before a site joins: exit 0 when clean, 1 with problems."""
    from data_loaders.validation import check_data_dir, print_report

    try:
        report = check_data_dir(data_dir, partitions)
    except DataError as exc:
        fail(str(exc))
    print_report(report, console)
    if report.problems:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command()
def evaluate(
    prediction: Path = typer.Argument(..., help="Predicted segmentation NIfTI."),
    reference: Path = typer.Argument(..., help="Reference segmentation NIfTI."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Score one segmentation against a reference: Dice, HD95, sensitivity, specificity per region."""
    from fedtumor.core.metrics import score_files

    try:
        scores = score_files(prediction, reference)
    except DataError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(scores, indent=2) + "\n")
        return
    from rich.table import Table

    metric_names = list(next(iter(scores.values())).keys())
    table = Table(title=f"{prediction.name} vs {reference.name}")
    table.add_column("region")
    for name in metric_names:
        table.add_column(name, justify="right")
    for region, values in scores.items():
        table.add_row(region, *(f"{values[name]:.4f}" for name in metric_names))
    console.print(table)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder written by the ServerApp.")) -> None:
    """Re-draw a run's plots and print its per-round table."""
    from fedtumor.run.report import print_run_report

    try:
        print_run_report(run_dir, console)
    except DataError as exc:
        fail(str(exc))


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="A run folder (or its final_model.pt)."),
    subject: Path = typer.Option(..., "--subject", help="A subject folder in a BraTS layout."),
    out: Path = typer.Option(..., "--out", help="Output segmentation, e.g. pred.nii.gz."),
) -> None:
    """Segment a new case with a run's global model; writes BraTS 2021 label values."""
    from data_loaders.inference import predict_subject_file

    try:
        path = predict_subject_file(model, subject, out)
    except (DataError, ConfigError) as exc:
        fail(str(exc))
    console.print(f"wrote {path}")
