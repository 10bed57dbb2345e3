"""`fedtumor check-data`: every check a site's data must pass before it joins."""

from __future__ import annotations

from pathlib import Path

import typer

from fedtumor.cli.common import EXIT_PROBLEMS, app, console, fail
from fedtumor.core.errors import DataError


@app.command("check-data")
def check_data(
    data_dir: Path = typer.Argument(..., help="A site folder (or a whole cohort) in a BraTS layout."),
    partitions: Path = typer.Option(None, "--partitions", help="FeTS partition CSV to check against."),
    strict: bool = typer.Option(False, "--strict", help="Fail (exit 1) on warnings too, not only on problems."),
    no_labels: bool = typer.Option(
        False, "--no-labels", help="A site without segmentations: check images only (a seg file is not opened)."
    ),
) -> None:
    """Validate every subject before a site joins: exit 0 when clean, 1 with problems (or warnings with --strict).

    Warnings name cases that do not look like BraTS preprocessing (skull stripping, 1 mm voxels,
    the SRI24 grid) and files that match no modality; see docs/data.md.
    """
    from data_loaders.check_report import print_report
    from data_loaders.validation import check_data_dir

    try:
        report = check_data_dir(data_dir, partitions, labels=not no_labels)
    except DataError as exc:
        fail(str(exc))
    print_report(report, console)
    if report.problems or (strict and report.warnings):
        raise typer.Exit(EXIT_PROBLEMS)
