"""`fedtumor cross-site RUN_DIR`: the cross-site matrix of a finished run, computed in this process.

For a simulated federation or a baseline, whose sites' data this machine holds: the models the
run folder holds (a federation's final global model; a local-only baseline's site models; the
pooled baseline's model) are scored on every site's validation subjects, read with the run's own
config as a baseline reads them, and cross_site.csv, cross_site_scores.csv and cross_site.png
are written (replacing the run's). Personal models live on the sites, never in the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fedtumor.cli.common import app, console, fail
from fedtumor.core.errors import ConfigError, DataError

_SITES_HELP = "Sites of the cohort (default: the run's own count, from config.json or the partition CSV)."
_THREADS_HELP = "PyTorch threads for this process (0: PyTorch's default, every core)."


@app.command("cross-site")
def cross_site(
    run_dir: Path = typer.Argument(..., help="A finished run folder (federation, or `fedtumor local`/`centralized`)."),
    sites: int = typer.Option(None, "--sites", min=1, help=_SITES_HELP),
    torch_threads: int = typer.Option(0, "--torch-threads", min=0, help=_THREADS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score a finished run's models on every site's validation subjects: cross_site.csv and .png."""
    from fedtumor.baselines.cross_site import local_models, score_on_sites
    from fedtumor.baselines.sites import load_sites, number_of_sites
    from fedtumor.cli.baselines import _baseline_progress, _no_progress
    from fedtumor.run.checkpoint import load_checkpoint
    from fedtumor.run.cross_site import GLOBAL_MODEL, cross_site_matrix, write_cross_site
    from fedtumor.run.files import SUMMARY_FILE

    try:
        config, saved = _run_config(run_dir)
        if not (run_dir / SUMMARY_FILE).is_file():
            raise DataError("not a finished run (no summary.json); score it once it has finished", path=run_dir)
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        kind = saved.get("baseline")
        n_sites = number_of_sites(config, sites or saved.get("num-nodes") or _cohort_sites(saved))
        if kind == "local":
            models = local_models(run_dir, list(saved["sites"]))
            console.print("Scoring each site's local-only model on every site's validation subjects.")
        elif kind == "centralized":
            models = {"centralized": load_checkpoint(run_dir)[0]}
            console.print("Scoring the pooled (centralized) model on every site's validation subjects.")
        else:
            models = {GLOBAL_MODEL: load_checkpoint(run_dir)[0]}
            console.print(
                "Scoring the final global model as saved in the run folder; personal models (and layers a "
                "method keeps on the sites, such as FedBN's norms) never leave the sites, so they are not scored."
            )
        with _baseline_progress() if progress else _no_progress() as bars:
            scores = score_on_sites(models, load_sites(config, n_sites), config, bars)
        paths = write_cross_site(run_dir, scores, title=f"Cross-site evaluation ({kind or config.strategy})")
    except (DataError, ConfigError, ValueError) as exc:
        fail(str(exc))
    _print_matrix(cross_site_matrix(scores))
    console.print("Written: " + ", ".join(str(path) for path in paths))


def _run_config(run_dir: Path):
    """(RunConfig, the whole saved config mapping) of a run folder's config.json."""
    from fedtumor.core.config import RunConfig, load_run_config
    from fedtumor.run.files import CONFIG_FILE

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise DataError("not a run folder (no config.json)", path=run_dir)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"unreadable run config ({type(exc).__name__})", path=path) from None
    known = RunConfig().to_run_config()  # config.json also records num-nodes, run-id, the baseline's sites
    return load_run_config({key: value for key, value in saved.items() if key in known}), saved


def _cohort_sites(saved: dict) -> int | None:
    """A baseline's count of cohort sites: the local baseline records it, the pooled one trains on all."""
    return saved.get("cohort-sites") or (saved.get("num-sites") if saved.get("baseline") == "centralized" else None)


def _print_matrix(matrix) -> None:
    from rich.table import Table

    table = Table(title="mean Dice: model (rows) on each site's validation subjects (columns)")
    table.add_column("model")
    for site in matrix.columns:
        table.add_column(str(site), justify="right")
    for model, row in matrix.iterrows():
        table.add_row(str(model), *("-" if value != value else f"{value:.3f}" for value in row))
    console.print(table)
