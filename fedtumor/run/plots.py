"""PNG plots of a run folder, drawn from its files alone (metrics.csv, overlay_case.npz).

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot,
so drawing leaves no global figure state behind and needs no display.
Missing data (no test split yet, no site metrics) gives a panel with a note, never an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from fedtumor.core.regions import REGIONS
from fedtumor.run.figures import REGION_COLOURS, note_panel, save_png
from fedtumor.run.files import DICE_PER_ROUND_PNG, HD95_PER_ROUND_PNG, OVERLAY_FILE, OVERLAY_PNG, SITE_DICE_PNG
from fedtumor.run.overlay_plot import plot_overlay
from fedtumor.run.writer import GLOBAL_SCOPE, metric_table, read_metrics, site_scopes

# BraTS' HD95 when exactly one of prediction and reference is empty.
HD95_EMPTY_MASK_MM = 373.1287
# Beyond this many sites a per-site legend stops being readable.
MAX_SITES_IN_LEGEND = 12
# Beyond this many sites the per-site bars move to a full-width second row.
MAX_SITES_SIDE_BY_SIDE = 16


# ----------------------------------------------------------------------------- helpers


def _round_axis(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left, right = ax.dataLim.intervalx
    if right - left < 1:  # a single round: keep the axis on whole, non-negative rounds
        ax.set_xlim(left - 0.3, left + 1.3)
    ax.set_xlabel("round")
    ax.grid(True, alpha=0.3)


def _region_columns(table: pd.DataFrame, kind: str) -> list[tuple[str, str]]:
    """(region, column) pairs present in a wide table, e.g. ("ET", "dice_et")."""
    return [(region, f"{kind}_{region.lower()}") for region in REGIONS if f"{kind}_{region.lower()}" in table.columns]


SPLIT_STYLES = {"test": ("-", "test", "held-out test"), "val": ("--", "fed. val", "federated val")}


def _plot_regions_per_round(ax: Axes, metrics: pd.DataFrame, kind: str) -> tuple[np.ndarray, list[str]]:
    """Test (solid) and federated validation (dashed) lines of one metric kind.

    Returns the values drawn and the splits that had any.
    """
    drawn: list[np.ndarray] = []
    splits: list[str] = []
    for split, (style, label, _) in SPLIT_STYLES.items():
        table = metric_table(metrics, GLOBAL_SCOPE, split)
        for region, column in _region_columns(table, kind):
            series = table[column].dropna()
            if series.empty:
                continue
            # Markers keep a single-round series visible; hollow ones mark validation.
            ax.plot(
                series.index,
                series.to_numpy(),
                style,
                marker="o",
                markersize=4,
                markerfacecolor=REGION_COLOURS[region] if split == "test" else "white",
                color=REGION_COLOURS[region],
                linewidth=2,
                label=f"{label} {region}",
            )
            drawn.append(series.to_numpy())
            if split not in splits:
                splits.append(split)
    return (np.concatenate(drawn) if drawn else np.empty(0)), splits


def _legend_and_gaps(ax: Axes, splits: list[str], loc: str) -> None:
    """Legend titled with the line styles in use; a split with no data gets a 'no ...' entry."""
    title = "   ".join(f"{'solid' if split == 'test' else 'dashed'}: {SPLIT_STYLES[split][2]}" for split in splits)
    handles, labels = ax.get_legend_handles_labels()
    for split, (_, _, long_name) in SPLIT_STYLES.items():
        if split not in splits:
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(f"(no {long_name} recorded)")
    ax.legend(handles, labels, loc=loc, ncols=len(splits), fontsize=9, title=title, title_fontsize=8.5)


# ----------------------------------------------------------------------------- per-round curves


def plot_dice_per_round(metrics: pd.DataFrame, out_png: Path | str) -> Path:
    """Held-out test Dice ET/TC/WT per round (solid) and federated validation Dice (dashed)."""
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    values, splits = _plot_regions_per_round(ax, metrics, "dice")
    if values.size:
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("Dice")
        _round_axis(ax)
        _legend_and_gaps(ax, splits, "lower right")
    else:
        note_panel(ax, "no Dice metrics recorded for the global model yet")
    ax.set_title("Global model Dice per round")
    return save_png(fig, out_png)


def plot_hd95_per_round(metrics: pd.DataFrame, out_png: Path | str) -> Path:
    """Held-out test HD95 ET/TC/WT per round (solid) and federated validation HD95 (dashed).

    A log axis, because the first rounds often sit at BraTS' 373 mm empty-mask penalty
    while a trained model is at a few mm (symlog when some HD95 is exactly 0).
    """
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    values, splits = _plot_regions_per_round(ax, metrics, "hd95")
    if values.size:
        top = max(float(values.max()), HD95_EMPTY_MASK_MM) * 1.35
        if (values <= 0).any():  # HD95 of 0 (both masks empty) has no log: linear below 1 mm
            ax.set_yscale("symlog", linthresh=1.0)
            bottom = -0.15  # a little room so points at exactly 0 are not cut by the axis
        else:
            ax.set_yscale("log")
            bottom = float(values.min()) / 1.5
        ax.set_ylim(bottom, top)
        # Plain millimetre ticks read better than powers of ten.
        ticks = [t for t in (0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200) if bottom <= t <= top] + [HD95_EMPTY_MASK_MM]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}" if value < 10 else f"{value:.0f}"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.axhline(HD95_EMPTY_MASK_MM, color="0.5", linewidth=1, linestyle=":")
        ax.text(
            0.08,
            HD95_EMPTY_MASK_MM,
            "one mask empty (BraTS penalty)",
            transform=ax.get_yaxis_transform(),
            va="bottom",
            ha="left",
            fontsize=8,
            color="0.4",
        )
        ax.set_ylabel("HD95 (mm, log scale; lower is better)")
        _round_axis(ax)
        _legend_and_gaps(ax, splits, "upper right")
    else:
        note_panel(ax, "no HD95 metrics recorded for the global model yet")
    ax.set_title("Global model HD95 per round")
    return save_png(fig, out_png)


# ----------------------------------------------------------------------------- per site


def _site_colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "viridis"]
    return [cmap(i if count <= 10 else i / max(count - 1, 1)) for i in range(count)]


def plot_site_dice(metrics: pd.DataFrame, out_png: Path | str) -> Path:
    """Per-site validation Dice: WT Dice per round per site, and each site's latest ET/TC/WT Dice."""
    sites = [site for site in site_scopes(metrics) if not metric_table(metrics, site, "val").empty]
    sites = [site for site in sites if _region_columns(metric_table(metrics, site, "val"), "dice")]
    if len(sites) <= MAX_SITES_SIDE_BY_SIDE:
        bar_width_in = max(5.5, 0.45 * len(sites) + 1.5)
        fig = Figure(figsize=(5.5 + bar_width_in, 4.8), layout="constrained")
        line_ax, bar_ax = fig.subplots(1, 2, width_ratios=[5.5, bar_width_in])
    else:  # many sites: the bars get the full width of a second row
        fig = Figure(figsize=(min(max(11.0, 0.2 * len(sites) + 2), 20.0), 9.0), layout="constrained")
        line_ax, bar_ax = fig.subplots(2, 1, height_ratios=[1, 1.1])
    fig.suptitle("Validation Dice of the global model on each site's validation subjects")
    if not sites:
        note_panel(line_ax, "no per-site validation Dice recorded")
        note_panel(bar_ax, "no per-site validation Dice recorded")
        return save_png(fig, out_png)

    colours = _site_colours(len(sites))
    many_sites = len(sites) > MAX_SITES_IN_LEGEND
    latest: dict[str, tuple[int, pd.Series]] = {}
    for site, colour in zip(sites, colours):
        table = metric_table(metrics, site, "val")
        if "dice_wt" in table.columns:
            wt = table["dice_wt"].dropna()
            line_ax.plot(
                wt.index,
                wt.to_numpy(),
                marker=None if many_sites else "o",
                markersize=3,
                color=colour,
                linewidth=1 if many_sites else 1.6,
                alpha=0.6 if many_sites else 0.9,
                label=site,
            )
        dice = table[[column for _, column in _region_columns(table, "dice")]].dropna(how="all")
        if not dice.empty:
            latest[site] = (int(dice.index[-1]), dice.iloc[-1])
    federated = metric_table(metrics, GLOBAL_SCOPE, "val")
    if "dice_wt" in federated.columns and federated["dice_wt"].notna().any():
        wt = federated["dice_wt"].dropna()
        line_ax.plot(wt.index, wt.to_numpy(), "--", color="black", linewidth=2.2, label="federated (weighted)")
    line_ax.set_ylim(0, 1.02)
    line_ax.set_ylabel("WT Dice")
    line_ax.set_title("Whole-tumour Dice per round")
    _round_axis(line_ax)
    if many_sites:
        line_ax.legend(
            handles=[
                Line2D([], [], color="0.5", label=f"{len(sites)} sites"),
                Line2D([], [], color="black", linestyle="--", linewidth=2.2, label="federated (weighted)"),
            ],
            loc="lower right",
            fontsize=9,
        )
    else:
        line_ax.legend(loc="lower right", fontsize=8.5, ncols=2 if len(sites) > 6 else 1)

    rounds_shown = {round_ for round_, _ in latest.values()}
    positions = np.arange(len(latest))
    width = 0.8 / len(REGIONS)
    for offset, region in enumerate(REGIONS):
        column = f"dice_{region.lower()}"
        heights = [values.get(column, np.nan) for _, values in latest.values()]
        bars = bar_ax.bar(positions + (offset - 1) * width, heights, width, color=REGION_COLOURS[region], label=region)
        if len(latest) <= 6:  # room to print the numbers themselves
            bar_ax.bar_label(bars, fmt="%.2f", fontsize=7.5, padding=2)
    label_rounds = len(rounds_shown) > 1 and len(latest) <= MAX_SITES_IN_LEGEND
    labels = [f"{site}\n(r{r})" for site, (r, _) in latest.items()] if label_rounds else list(latest)
    bar_ax.set_xticks(
        positions,
        labels,
        rotation=45 if len(latest) > 8 else 0,
        ha="right" if len(latest) > 8 else "center",
        fontsize=9 if len(latest) <= 30 else 7,
        rotation_mode="anchor",
    )
    bar_ax.set_ylim(0, 1.16)  # headroom above 1 keeps the legend off the bars
    bar_ax.set_yticks(np.linspace(0, 1, 6))
    bar_ax.set_ylabel("Dice")
    bar_ax.grid(True, axis="y", alpha=0.3)
    if len(rounds_shown) == 1:
        when = f"round {rounds_shown.pop()}"
    else:
        when = f"each site's latest round ({min(rounds_shown)}–{max(rounds_shown)})"
    bar_ax.set_title(f"Dice per site and region, {when}")
    bar_ax.legend(loc="upper center", fontsize=9, ncols=3, framealpha=0.9)
    return save_png(fig, out_png)


# ----------------------------------------------------------------------------- whole run


def draw_run_plots(run_dir: Path | str) -> list[Path]:
    """(Re)draw every PNG of a run folder from its files; returns the paths written.

    Raises DataError when metrics.csv (or an existing overlay_case.npz) cannot be read.
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    written = [
        plot_dice_per_round(metrics, run_dir / DICE_PER_ROUND_PNG),
        plot_hd95_per_round(metrics, run_dir / HD95_PER_ROUND_PNG),
        plot_site_dice(metrics, run_dir / SITE_DICE_PNG),
    ]
    overlay = run_dir / OVERLAY_FILE
    if overlay.is_file():
        written.append(plot_overlay(overlay, run_dir / OVERLAY_PNG))
    return written
