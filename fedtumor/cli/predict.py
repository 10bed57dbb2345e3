"""`fedtumor predict`: segment one subject or a folder of subjects with a trained model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fedtumor.cli.common import EXIT_PROBLEMS, app, console, error_console, fail
from fedtumor.core.errors import ConfigError, DataError

_INPUT_HELP = "One subject folder, or a folder of subject folders, in a BraTS 2021 / FeTS / 2023 layout."
_OUT_HELP = (
    "A folder: one <ID>.nii.gz per subject is written there. A file ending in .nii.gz or .nii: "
    "the input must hold exactly one subject."
)
_LABELS_HELP = "Label values to write: brats2021 (ET = 4) or brats2023 (ET = 3); default: the input's layout."


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="A run folder (or its final_model.pt)."),
    input_dir: Path = typer.Option(..., "--input", "--subject", help=_INPUT_HELP),
    out: Path = typer.Option(..., "--out", help=_OUT_HELP),
    labels: str | None = typer.Option(None, "--labels", help=_LABELS_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: keep them)."),
    device: str = typer.Option("auto", "--device", help="auto (a GPU when present), cpu or cuda."),
) -> None:
    """Segment new cases with a run's global model, masked to the brain, on each input's own grid.

    Each case prints its time; a bad case (missing modality, corrupt file) prints one error line
    and the others go on; a scan that does not look skull-stripped is segmented with a warning.
    Exit code 1 when any case failed. Existing outputs are kept unless --overwrite.
    """
    from data_loaders.inference import Predictor, is_nifti_path, output_path, predict_cases
    from data_loaders.layouts import discover_subjects
    from fedtumor.core.regions import CONVENTIONS

    if labels is not None and labels not in CONVENTIONS:
        fail(f"--labels: {labels!r} is not one of {', '.join(CONVENTIONS)}")
    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device: {device!r} is not one of auto, cpu, cuda")
    try:
        subjects = discover_subjects(input_dir)
    except DataError as exc:
        fail(str(exc))
    if is_nifti_path(out):
        if len(subjects) != 1:
            fail(f"--out {out} is one file but {input_dir} holds {len(subjects)} subjects; give a folder")
        out_paths = [out]
    else:
        if out.exists() and not out.is_dir():
            fail(f"--out {out} exists and is not a folder")
        # An output folder inside a cohort folder is not a subject.
        subjects = [s for s in subjects if s.folder.resolve() != out.resolve()]
        out_paths = [output_path(out, s.subject_id) for s in subjects]
    try:
        predictor = Predictor.load(model, device)
    except (DataError, ConfigError, RuntimeError) as exc:
        fail(str(exc))

    results = []
    with _progress() as bar:
        task = bar.add_task("predict", total=len(subjects))
        for result in predict_cases(predictor, subjects, out_paths, labels=labels, overwrite=overwrite):
            results.append(result)
            _print_case(result)
            bar.advance(task)
    failed = [r for r in results if not r.ok]
    skipped = sum(r.skipped for r in results)
    written = len(results) - len(failed) - skipped
    warned = sum(bool(r.warnings) for r in results)
    colour = "red" if failed else "yellow" if warned else "green"
    summary = f"{len(results)} subject(s): {written} written, {skipped} kept, {len(failed)} failed"
    console.print(f"[bold {colour}]{summary}{f', {warned} with warnings' if warned else ''}[/]", highlight=False)
    if failed:
        raise typer.Exit(EXIT_PROBLEMS)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _print_case(result) -> None:
    if result.error is not None:
        # error_console is stderr; the bar lives on stdout, so this line never tears it.
        error_console.print(f"[bold red]error:[/] {escape(result.error)}", highlight=False, soft_wrap=True)
        return
    for warning in result.warnings:
        error_console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if result.skipped:
        console.print(
            f"kept  {escape(result.subject_id)}: {escape(str(result.output))} exists (--overwrite replaces)",
            soft_wrap=True,
        )
    else:
        console.print(
            f"wrote {escape(result.subject_id)} in {result.seconds:.1f}s: {escape(str(result.output))}", soft_wrap=True
        )
