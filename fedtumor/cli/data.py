"""Cohort and run commands: make a synthetic cohort, report on a finished run."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from fedtumor.cli.common import app, console, fail
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


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder written by the ServerApp.")) -> None:
    """Re-draw a run's plots and print its per-round table."""
    from fedtumor.run.report import print_run_report

    try:
        print_run_report(run_dir, console)
    except DataError as exc:
        fail(str(exc))
