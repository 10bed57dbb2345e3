"""A one-page picture of a cohort: one row per subject, the four modalities and the labels on FLAIR.

Reads subjects in the BraTS 2021 layout (``<ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii.gz``), so it works
for the synthetic cohort and for real data alike. Each row shows the axial slice through the
centre of the whole tumour. Uses matplotlib's object API only: no pyplot, no global backend change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
# BraTS 2021 label value -> (name, colour), colours as in most BraTS figures.
LABEL_COLOURS: dict[int, tuple[str, str]] = {
    1: ("NCR necrotic core", "#e41a1c"),
    2: ("ED oedema", "#4daf4a"),
    4: ("ET enhancing tumour", "#ffd92f"),
}
OVERLAY_ALPHA = 0.45
PANEL_INCHES = 2.3


@dataclass(frozen=True)
class MontageRow:
    title: str
    subject_dir: Path  # holds <ID>_{t1,t1ce,t2,flair,seg}.nii.gz, ID being the folder's name


def write_montage(rows: Sequence[MontageRow], out_path: Path) -> Path:
    """Draw one row per subject (t1, t1ce, t2, flair, flair + labels) and save a PNG."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    columns = (*MODALITIES, "flair + labels")
    figure = Figure(figsize=(PANEL_INCHES * len(columns), PANEL_INCHES * len(rows) + 0.6), facecolor="black")
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for row_axes, row in zip(axes, rows):
        images, seg = _read_subject(row.subject_dir)
        z = tumour_centre_slice(seg)
        for ax, column in zip(row_axes, columns):
            modality = "flair" if column == "flair + labels" else column
            ax.imshow(_display(images[modality][:, :, z]), cmap="gray", vmin=0.0, vmax=1.0, origin="lower")
            if column == "flair + labels":
                ax.imshow(_label_overlay(seg[:, :, z]), origin="lower", interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(column, color="white", fontsize=9)
        row_axes[0].text(
            -0.08,
            0.5,
            f"{row.title}\naxial z={z}",
            transform=row_axes[0].transAxes,
            color="white",
            fontsize=8,
            rotation=90,
            ha="right",
            va="center",
        )
    legend = [Patch(facecolor=colour, label=name) for name, colour in LABEL_COLOURS.values()]
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), frameon=False, labelcolor="white", fontsize=9)
    figure.subplots_adjust(
        left=0.05,
        right=0.99,
        top=1 - 0.35 / figure.get_figheight(),
        bottom=0.45 / figure.get_figheight(),
        wspace=0.02,
        hspace=0.12,
    )
    out_path = Path(out_path)
    figure.savefig(out_path, dpi=100, facecolor="black")
    return out_path


def tumour_centre_slice(seg: np.ndarray) -> int:
    """Axial index through the centroid of the whole tumour; the middle slice when there is none."""
    tumour = np.argwhere(seg > 0)
    if len(tumour) == 0:
        return seg.shape[2] // 2
    return int(round(tumour[:, 2].mean()))


def _read_subject(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    import nibabel as nib

    folder = Path(folder)

    def load(suffix: str) -> np.ndarray:
        return np.asanyarray(nib.load(folder / f"{folder.name}_{suffix}.nii.gz").dataobj)

    return {m: load(m).astype(np.float32) for m in MODALITIES}, load("seg").astype(np.uint8)


def _display(slice_2d: np.ndarray) -> np.ndarray:
    """Transpose to (y, x) for imshow and scale the brain's 99.5th percentile to white."""
    brain = slice_2d[slice_2d > 0]
    high = np.percentile(brain, 99.5) if brain.size else 1.0
    return np.clip(slice_2d / max(high, 1e-6), 0.0, 1.0).T


def _label_overlay(seg_2d: np.ndarray) -> np.ndarray:
    rgba = np.zeros((*seg_2d.T.shape, 4))
    for value, (_, colour) in LABEL_COLOURS.items():
        rgb = tuple(int(colour[i : i + 2], 16) / 255.0 for i in (1, 3, 5))
        rgba[seg_2d.T == value] = (*rgb, OVERLAY_ALPHA)
    return rgba
