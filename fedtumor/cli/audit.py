"""`fedtumor audit`: verify a run's hash-chained log, hash a site's data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fedtumor.cli.common import EXIT_PROBLEMS, app, console, error_console, fail
from fedtumor.core.errors import DataError
from fedtumor.run.files import MODEL_FILES, RESUME_FILE

audit_app = typer.Typer(help="Audit a run: check its hash-chained audit log, hash a site's data.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(run_dir: Path = typer.Argument(..., help="A run folder written by the ServerApp.")) -> None:
    """Recompute audit.jsonl's hash chain and the saved models' hashes: exit 0 intact, 1 altered, 2 unreadable."""
    from fedtumor.run.audit import verify_run

    try:
        report = verify_run(run_dir, model_files=(*MODEL_FILES, RESUME_FILE))
    except (FileNotFoundError, OSError) as exc:
        fail(str(exc))
    if report.problem is not None:
        error_console.print(f"[bold red]altered:[/] {escape(str(report.problem))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_PROBLEMS)
    models = ", ".join(report.models_checked) or "none"
    console.print(f"intact: {report.entries} entries, {report.rounds} rounds; model hashes match for {models}")


@audit_app.command("manifest")
def audit_manifest(data_dir: Path = typer.Argument(..., help="A site folder in a BraTS layout.")) -> None:
    """Print the data-manifest hash of a deployed site's folder (every subject in it), as its replies carry it."""
    from data_loaders.layouts import discover_subjects
    from data_loaders.manifest import site_manifest

    try:
        entries, sha256 = site_manifest(discover_subjects(data_dir))
    except (DataError, OSError) as exc:
        fail(str(exc))
    console.print(f"{sha256}  {len(entries)} files in {data_dir}")
