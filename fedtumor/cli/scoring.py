"""`fedtumor evaluate`: score predicted segmentations against references."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from fedtumor.cli.common import app, console, fail
from fedtumor.core.errors import DataError


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
