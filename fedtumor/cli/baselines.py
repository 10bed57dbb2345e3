"""Baselines that share the federation's config and budget: pooled, local-only, FedAvg-FT."""

from __future__ import annotations

from pathlib import Path

import typer

from fedtumor.cli.common import app, console, fail
from fedtumor.core.errors import ConfigError, DataError


def _baseline_setup(run_config: str, app_dir: Path | None, sites: int | None, torch_threads: int, kind: str):
    """(config, number of sites, run folder) for a baseline, read exactly as a federation reads them.

    The config is ``--app-dir``'s ``[tool.flwr.app.config]``; without ``--app-dir``, the current
    folder's when it is a Flower app (as `flwr run .` would read it), else the packaged defaults
    (the same values fedtumor ships in its own pyproject.toml). Then the ``--run-config`` overrides.
    """
    import datetime as dt

    import torch

    from fedtumor.baselines.sites import number_of_sites
    from fedtumor.core.config import find_app_dir, read_run_config, resolve_output_dir
    from fedtumor.federation.settings import check_federation_keys

    config = check_federation_keys(read_run_config(run_config, app_dir or find_app_dir(Path.cwd())))
    n_sites = number_of_sites(config, sites)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    run_name = config.run_name or f"{kind}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    return config, n_sites, resolve_output_dir(config) / run_name


def _baseline_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _print_final(kind: str, summary: dict, run_dir: Path) -> None:
    final = summary["final"]
    console.print(
        f"{kind}: {summary['rounds']} rounds x {summary['epochs_per_round']} epochs in {summary['wall_time_s']:.1f}s; "
        f"held-out Dice ET {final['dice_et']:.3f} TC {final['dice_tc']:.3f} WT {final['dice_wt']:.3f}; "
        f"results in {run_dir}"
    )


# "\\[": a literal bracket, not rich markup
_RUN_CONFIG_HELP = "Overrides of pyproject's \\[tool.flwr.app.config], as for `flwr run --run-config`."
_APP_DIR_HELP = (
    "Flower app folder whose \\[tool.flwr.app.config] is the base (default: the current folder if it is one, "
    "else fedtumor's packaged defaults)."
)
_SITES_HELP = "Sites of a synthetic cohort (a simulation's num-supernodes); read from the partition CSV with data-dir."
_THREADS_HELP = "PyTorch threads for this process (0: PyTorch's default, every core)."


@app.command()
def centralized(
    run_config: str = typer.Option("", "--run-config", help=_RUN_CONFIG_HELP),
    app_dir: Path = typer.Option(None, "--app-dir", help=_APP_DIR_HELP),
    sites: int = typer.Option(None, "--sites", min=1, help=_SITES_HELP),
    torch_threads: int = typer.Option(0, "--torch-threads", min=0, help=_THREADS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Pooled-data baseline: one model on every site's training subjects, same budget as the federation."""
    from fedtumor.baselines.centralized import run_centralized

    try:
        config, n_sites, run_dir = _baseline_setup(run_config, app_dir, sites, torch_threads, "centralized")
        with _baseline_progress() if progress else _no_progress() as bars:
            summary = run_centralized(config, n_sites, run_dir, bars)
    except (DataError, ConfigError, FileExistsError) as exc:
        fail(str(exc))
    _print_final("centralized", summary, run_dir)


@app.command()
def local(
    run_config: str = typer.Option("", "--run-config", help=_RUN_CONFIG_HELP),
    app_dir: Path = typer.Option(None, "--app-dir", help=_APP_DIR_HELP),
    sites: int = typer.Option(None, "--sites", min=1, help=_SITES_HELP),
    only: list[str] = typer.Option(None, "--only", help="Train only this site (repeatable), e.g. --only site-3."),
    torch_threads: int = typer.Option(0, "--torch-threads", min=0, help=_THREADS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Local-only baselines: one model per site on its own data, same budget as in the federation."""
    from fedtumor.baselines.local import run_local

    try:
        config, n_sites, run_dir = _baseline_setup(run_config, app_dir, sites, torch_threads, "local")
        with _baseline_progress() if progress else _no_progress() as bars:
            summary = run_local(config, n_sites, run_dir, bars, only_sites=only or None)
    except (DataError, ConfigError, FileExistsError, ValueError) as exc:
        fail(str(exc))
    _print_final("mean local model", summary, run_dir)
    for site, final in summary["per_site_final"].items():
        console.print(f"  {site}: Dice ET {final['dice_et']:.3f} TC {final['dice_tc']:.3f} WT {final['dice_wt']:.3f}")


def _no_progress():
    import contextlib

    return contextlib.nullcontext(None)


@app.command("fine-tune")
def fine_tune(
    run: Path = typer.Option(..., "--run", help="Run folder of a finished federation (final_model.pt, config.json)."),
    epochs: int = typer.Option(2, "--epochs", min=1, help="Passes over each site's training patches."),
    run_config: str = typer.Option("", "--run-config", help="Overrides of the run's own config (config.json)."),
    out: Path = typer.Option(None, "--out", help="Folder for summary.json and the plot (default: <run>-fine-tune)."),
    torch_threads: int = typer.Option(0, "--torch-threads", min=0, help=_THREADS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """FedAvg-FT: every site fine-tunes the run's final model on its own data; global and fine-tuned scores."""
    from fedtumor.baselines.fine_tune import run_fine_tune

    out_dir = out or run.parent / f"{run.name}-fine-tune"
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    try:
        with _baseline_progress() if progress else _no_progress() as bars:
            summary = run_fine_tune(run, epochs, out_dir, run_config, bars)
    except (DataError, ConfigError, FileExistsError) as exc:
        fail(str(exc))
    for site, scores in summary["sites"].items():
        console.print(
            f"  {site}: validation mean Dice global {scores['global_val']['mean_dice']:.3f}, "
            f"fine-tuned {scores['personal_val']['mean_dice']:.3f}"
        )
    mean = summary["mean"]
    console.print(
        f"fine-tune: {epochs} epochs; mean validation Dice global {mean['global_val']['mean_dice']:.3f}, "
        f"fine-tuned {mean['personal_val']['mean_dice']:.3f}; held-out fine-tuned "
        f"{mean['personal_heldout']['mean_dice']:.3f}; results in {out_dir}"
    )
