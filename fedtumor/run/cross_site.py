"""Cross-site evaluation files: the matrix of every model's scores on every site's validation subjects.

A table in, files out: the ServerApp, the local-only baseline and ``fedtumor cross-site`` hand
:func:`write_cross_site` the same nested mapping ``{model label: {site id: {metric: value}}}``
and get, in the run folder,

- ``cross_site.csv``: rows are the models evaluated (``global``, ``site-1 personal``,
  ``site-2 local``, ...), columns the evaluating sites, cells the mean Dice (ET, TC, WT);
  an empty cell is a pair that was not scored (a personal model that was not shared);
- ``cross_site_scores.csv``: the same in long format with every metric (model, site, metric, value);
- ``cross_site.png``: a heatmap of the matrix, values annotated.

Example::

    scores = {"global": {"site-1": {"mean_dice": 0.7, "dice_et": 0.6, "dice_tc": 0.7, "dice_wt": 0.8}}}
    csv_path, long_path, png_path = write_cross_site(run_dir, scores)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedtumor.core.metrics import mean_dice
from fedtumor.core.ordering import natural_key
from fedtumor.run.figures import save_png
from fedtumor.run.files import CROSS_SITE_FILE, CROSS_SITE_PNG, CROSS_SITE_SCORES_FILE

# What a site reports per model: small on purpose (scores only, never images or predictions).
CROSS_SITE_METRICS = ("mean_dice", "dice_et", "dice_tc", "dice_wt")
MATRIX_METRIC = "mean_dice"
GLOBAL_MODEL = "global"
MODEL_COLUMN = "model"
# Beyond this many sites the cell values are unreadable: the colours alone are drawn.
MAX_ANNOTATED_SITES = 20

Scores = Mapping[str, Mapping[str, Mapping[str, float]]]  # model label -> site id -> metric -> value


def personal_model(site_id: str) -> str:
    """Row label of a site's personal model (kept on the site by personalised methods)."""
    return f"{site_id} personal"


def local_model(site_id: str) -> str:
    """Row label of a site's local-only model (the local baseline)."""
    return f"{site_id} local"


def cross_site_metrics(means: Mapping[str, float]) -> dict[str, float]:
    """The few scores a site reports for one model, from :func:`~fedtumor.core.training.evaluate_cases`' means."""
    if not means:
        return {}
    return {MATRIX_METRIC: mean_dice(dict(means)), **{name: float(means[name]) for name in CROSS_SITE_METRICS[1:]}}


def _sites(scores: Scores) -> list[str]:
    return sorted({site for by_site in scores.values() for site in by_site}, key=natural_key)


def cross_site_matrix(scores: Scores, metric: str = MATRIX_METRIC) -> pd.DataFrame:
    """Models (rows, in the order given) by evaluating sites (columns, natural order); NaN where not scored."""
    sites = _sites(scores)
    values = [[float(scores[model].get(site, {}).get(metric, np.nan)) for site in sites] for model in scores]
    frame = pd.DataFrame(values, index=pd.Index(list(scores), name=MODEL_COLUMN), columns=sites)
    frame.columns.name = None
    return frame


def matrix_cells(scores: Scores, metric: str = MATRIX_METRIC) -> dict[str, dict[str, float]]:
    """``{model: {site: value}}`` of the pairs that were scored (for summary.json and the audit log)."""
    return {
        model: {site: float(values[metric]) for site, values in by_site.items() if metric in values}
        for model, by_site in scores.items()
    }


def cross_site_long(scores: Scores) -> pd.DataFrame:
    """One row per (model, site, metric)."""
    rows = [
        {MODEL_COLUMN: model, "site": site, "metric": name, "value": float(value)}
        for model, by_site in scores.items()
        for site in sorted(by_site, key=natural_key)
        for name, value in by_site[site].items()
    ]
    return pd.DataFrame(rows, columns=[MODEL_COLUMN, "site", "metric", "value"])


def write_cross_site(run_dir: Path | str, scores: Scores, title: str = "Cross-site evaluation") -> tuple[Path, ...]:
    """Write the matrix CSV, the long CSV and the heatmap into ``run_dir`` (replacing earlier ones).

    Returns their paths. ``scores`` must name at least one model scored on at least one site.
    """
    if not any(scores.values()):
        raise ValueError("no cross-site scores to write: no model was scored on any site")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    matrix = cross_site_matrix(scores)
    matrix_path = run_dir / CROSS_SITE_FILE
    matrix.to_csv(matrix_path)  # full precision: values read back exactly
    long_path = run_dir / CROSS_SITE_SCORES_FILE
    cross_site_long(scores).to_csv(long_path, index=False)
    png_path = plot_cross_site(matrix, run_dir / CROSS_SITE_PNG, title)
    return matrix_path, long_path, png_path


def read_cross_site(run_dir: Path | str) -> pd.DataFrame:
    """``cross_site.csv`` of a run folder as written: models by sites, mean Dice, NaN where not scored."""
    return pd.read_csv(Path(run_dir) / CROSS_SITE_FILE, index_col=MODEL_COLUMN)


def plot_cross_site(matrix: pd.DataFrame, out_png: Path | str, title: str = "Cross-site evaluation") -> Path:
    """Heatmap of a cross-site matrix: Dice 0..1 as colour, each cell's value written on it."""
    n_models, n_sites = matrix.shape
    fig = Figure(figsize=(max(5.0, 1.1 * n_sites + 3.0), max(3.0, 0.55 * n_models + 2.0)), layout="constrained")
    ax = fig.add_subplot()
    values = matrix.to_numpy(dtype=float)
    cmap = _colour_map()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n_sites), labels=list(matrix.columns), rotation=45 if n_sites > 6 else 0, ha="right")
    ax.set_yticks(range(n_models), labels=list(matrix.index))
    ax.set_xlabel("evaluating site (its validation subjects)")
    ax.set_ylabel("model")
    ax.set_title(f"{title}: mean Dice (ET, TC, WT)")
    if n_sites <= MAX_ANNOTATED_SITES:
        for row in range(n_models):
            for column in range(n_sites):
                value = values[row, column]
                text = "not scored" if np.isnan(value) else f"{value:.3f}"
                colour = "0.3" if np.isnan(value) else ("black" if value > 0.6 else "white")
                ax.text(column, row, text, ha="center", va="center", color=colour, fontsize=9)
    fig.colorbar(image, ax=ax, label="mean Dice")
    return save_png(fig, out_png)


def _colour_map():
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="0.92")  # pairs that were not scored: light grey
