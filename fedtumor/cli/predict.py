"""`fedtumor predict`: segment new cases with a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from fedtumor.cli.common import app, console, fail
from fedtumor.core.errors import ConfigError, DataError


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
