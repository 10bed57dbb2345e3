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
