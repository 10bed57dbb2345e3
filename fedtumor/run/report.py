"""`fedtumor report RUN_DIR`: re-draw a run's plots and print its per-round table and summary."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from fedtumor.core.errors import DataError
from fedtumor.core.regions import REGIONS
from fedtumor.run.plots import draw_run_plots
from fedtumor.run.writer import GLOBAL_SCOPE, metric_table, read_metrics, read_summary, site_scopes

MISSING = "–"
MAX_SITES_LISTED = 12


def _number(value: Any, digits: int) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return MISSING if value is None else str(value)
    return MISSING if math.isnan(number) else f"{number:.{digits}f}"


def _cell(table: pd.DataFrame, round_: int, column: str, digits: int) -> str:
    if column not in table.columns or round_ not in table.index:
        return MISSING
    return _number(table.at[round_, column], digits)


def _mean_val_dice(federated_val: pd.DataFrame, round_: int) -> str:
    columns = [f"dice_{region.lower()}" for region in REGIONS if f"dice_{region.lower()}" in federated_val.columns]
    if not columns or round_ not in federated_val.index:
        return MISSING
    return _number(federated_val.loc[round_, columns].mean(skipna=True), 3)


def round_table(metrics: pd.DataFrame) -> Table:
    """One row per round: test Dice and HD95 per region, mean federated validation Dice, sites trained."""
    test = metric_table(metrics, GLOBAL_SCOPE, "test")
    federated_val = metric_table(metrics, GLOBAL_SCOPE, "val")
    trained = metrics[(metrics["scope"] != GLOBAL_SCOPE) & (metrics["split"] == "train")]
    sites_per_round = trained.groupby("round")["scope"].nunique()

    # No vertical rules: the table stays within an 80-column terminal.
    table = Table(
        title="Global model per round: Dice and HD95 (mm) on the held-out test set; "
        "val Dice = mean federated validation Dice of ET/TC/WT; sites = sites that trained",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("round", justify="right")
    for region in REGIONS:
        table.add_column(f"Dice {region}", justify="right")
    for region in REGIONS:
        table.add_column(f"HD95 {region}", justify="right")
    table.add_column("val Dice", justify="right")
    table.add_column("sites", justify="right")
    for round_ in sorted(set(metrics["round"].unique().tolist())):
        table.add_row(
            str(round_),
            *(_cell(test, round_, f"dice_{region.lower()}", 3) for region in REGIONS),
            *(_cell(test, round_, f"hd95_{region.lower()}", 1) for region in REGIONS),
            _mean_val_dice(federated_val, round_),
            str(int(sites_per_round.get(round_, 0))) if round_ in sites_per_round.index else MISSING,
        )
    return table


def _wall_time(seconds: Any) -> str:
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return MISSING
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _scores(scores: Any) -> str:
    """'Dice ET 0.712  TC ... | HD95 ET 12.3 ...' from a summary's final/best block."""
    if not isinstance(scores, Mapping):
        return MISSING
    parts = []
    known = set()
    for kind, label, digits in (("dice", "Dice", 3), ("hd95", "HD95 (mm)", 1)):
        keys = [(region, f"{kind}_{region.lower()}") for region in REGIONS if f"{kind}_{region.lower()}" in scores]
        known.update(key for _, key in keys)
        if keys:
            parts.append(f"{label} " + "  ".join(f"{region} {_number(scores[key], digits)}" for region, key in keys))
    if "round" in scores:
        known.add("round")
        parts.insert(0, f"round {scores['round']}")
    extras = [f"{key} {_number(value, 3)}" for key, value in scores.items() if key not in known]
    return " | ".join(parts + ([", ".join(extras)] if extras else [])) or MISSING


def _print_summary(run_dir: Path, console: Console) -> None:
    try:
        summary = read_summary(run_dir)
    except DataError as exc:  # the metrics still tell the story; say what is wrong and go on
        console.print(f"[yellow]warning:[/] {exc}", highlight=False)
        return
    if summary is None:
        console.print("no summary.json: the run is still going, or stopped before it finished", style="yellow")
        return
    console.print("[bold]Summary[/]")
    if summary.get("status") == "failed":  # a run that stopped early still has its rounds above
        last = summary.get("last_completed_round", MISSING)
        console.print(
            f"  status     failed after round {last}: {summary.get('error', MISSING)}", style="red", highlight=False
        )
    console.print(f"  strategy   {summary.get('strategy', MISSING)}", highlight=False)
    console.print(f"  rounds     {summary.get('rounds', MISSING)}", highlight=False)
    console.print(f"  wall time  {_wall_time(summary.get('wall_time_s'))}", highlight=False)
    console.print(f"  final      {_scores(summary.get('final'))}", highlight=False)
    if "best" in summary:
        console.print(f"  best       {_scores(summary.get('best'))}", highlight=False)


def print_run_report(run_dir: Path, console: Console) -> None:
    """Re-draw the plots of ``run_dir`` and print its per-round table, summary and PNG list.

    Raises DataError (one line naming the path) when the folder or its metrics.csv is missing
    or unreadable.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError("no such run folder" if not run_dir.exists() else "not a folder", path=run_dir)
    metrics = read_metrics(run_dir)
    pngs = draw_run_plots(run_dir)

    console.print(f"[bold]Run[/] {run_dir}", highlight=False)
    sites = site_scopes(metrics)
    if sites:
        shown = ", ".join(sites[:MAX_SITES_LISTED]) + (", ..." if len(sites) > MAX_SITES_LISTED else "")
        console.print(f"{len(sites)} sites: {shown}", highlight=False)
    if metrics.empty:
        console.print("metrics.csv has no rows yet", style="yellow")
    else:
        console.print(round_table(metrics))
    _print_summary(run_dir, console)
    console.print("[bold]Plots[/]")
    for png in pngs:
        console.print(f"  {png}", highlight=False, soft_wrap=True)
