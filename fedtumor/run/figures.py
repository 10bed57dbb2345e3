"""What every fedtumor figure shares: resolution, colours, the saved-atomically PNG, the empty-panel note.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot,
so drawing leaves no global figure state behind and needs no display.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 130
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
REGION_COLOURS = {"ET": "#D55E00", "TC": "#0072B2", "WT": "#009E73"}


def note_panel(ax: Axes, text: str) -> None:
    """Stand-in for a panel whose data is missing."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35", fontsize=11, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def save_png(fig: Figure, out_png: Path | str) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_png.with_name(f".{out_png.stem}.tmp{out_png.suffix}")  # a crash never leaves half a PNG
    fig.savefig(temporary, dpi=DPI)
    os.replace(temporary, out_png)
    return out_png
