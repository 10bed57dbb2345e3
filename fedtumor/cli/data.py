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


class SynthGeometry(str, Enum):
    cube = "cube"
    brats = "brats"


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the cohort into."),
    sites: int = typer.Option(4, "--sites", min=1, help="Number of sites (partitions)."),
    subjects: int = typer.Option(24, "--subjects", min=1, help="Training subjects over all sites."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same cohort."),
    shape: SynthShape = typer.Option(
        None, "--shape", help="Edge length of the cubic volumes (cube geometry only; default 64)."
    ),
    test_subjects: int = typer.Option(
        None, "--test-subjects", min=1, help="Held-out test subjects no site trains on (default: about 20%)."
    ),
    geometry: SynthGeometry = typer.Option(
        SynthGeometry.cube,
        "--geometry",
        help="cube: --shape^3 voxels over 192 mm; brats: the BraTS grid, 240x240x155 at 1 mm, LPS, SRI24-placed.",
    ),
) -> None:
    """Write a synthetic multi-site cohort in the BraTS 2021 layout plus partitioning.csv.

    Example: ``fedtumor synth --out /tmp/cohort --geometry brats --sites 2 --subjects 6``
    """
    from data_loaders.synthetic import generate_cohort

    if geometry is SynthGeometry.brats and shape is not None:
        fail("fedtumor synth --shape: the brats geometry is fixed (240x240x155 voxels of 1 mm); drop --shape")
    edge = int(shape.value) if shape is not None else 64
    try:
        info = generate_cohort(
            out,
            n_sites=sites,
            n_subjects=subjects,
            seed=seed,
            shape=edge,
            n_test=test_subjects,
            geometry=geometry.value,
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
