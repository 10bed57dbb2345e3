"""The prediction overlay PNG: one held-out case's FLAIR with the reference and predicted sub-regions.

Drawn from ``overlay_case.npz`` alone (image, reference, prediction on one 3D grid), in the
slice through the tumour's centre, cropped to the head.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fedtumor.core.errors import DataError
from fedtumor.core.metrics import dice
from fedtumor.core.regions import CONVENTIONS, REGIONS, detect_convention, labels_to_regions
from fedtumor.run.figures import save_png

# Tumour sub-regions in the overlay: the usual BraTS red / green / yellow.
LABEL_COLOURS = {"NCR": "#FF3030", "ED": "#30D050", "ET": "#FFE000"}
LABEL_NAMES = {"NCR": "necrotic core (NCR)", "ED": "oedema (ED)", "ET": "enhancing tumour (ET)"}
OVERLAY_ALPHA = 0.5
OUTLINE_COLOUR = "#00E5FF"  # cyan: visible on bright FLAIR tumour and unlike the label colours


def _load_overlay(npz_path: Path) -> dict:
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            case = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read overlay case ({type(exc).__name__})", path=npz_path) from None
    missing = {"image", "reference", "prediction"} - case.keys()
    if missing:
        raise DataError(f"overlay case lacks {', '.join(sorted(missing))}", path=npz_path)
    shapes = {case[key].shape for key in ("image", "reference", "prediction")}
    if len(shapes) != 1 or case["image"].ndim != 3:
        raise DataError(f"overlay arrays must share one 3D shape, got {sorted(shapes)}", path=npz_path)
    return case


def _tumour_centre(*labels: np.ndarray) -> tuple[int, int, int]:
    """Voxel centroid of the first non-empty label map (reference, then prediction); else the centre."""
    for label in labels:
        voxels = np.argwhere(label > 0)
        if len(voxels):
            return tuple(int(round(c)) for c in voxels.mean(axis=0))
    return tuple(size // 2 for size in labels[0].shape)


def _head_mask(image: np.ndarray) -> np.ndarray:
    """Voxels unlike the corner voxel: the head, whatever value normalisation left the background at."""
    background = float(image.flat[0])
    return np.isfinite(image) & ~np.isclose(image, background, atol=1e-3 * (abs(background) + 1))


def _foreground_box(head: np.ndarray, *labels: np.ndarray, margin: int = 3) -> tuple[slice, slice, slice]:
    """Bounding box of the head and tumour plus a margin: cropping the empty border fills the panels."""
    foreground = head.copy()
    for label in labels:
        foreground |= label > 0
    if not foreground.any():
        return tuple(slice(0, size) for size in head.shape)
    box = []
    for axis, size in enumerate(head.shape):
        present = np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + margin + 1, size)))
    return tuple(box)


def _label_rgba(label_slice: np.ndarray, codes: dict[str, int]) -> np.ndarray:
    rgba = np.zeros((*label_slice.shape, 4))
    for name, code in codes.items():
        hexcode = LABEL_COLOURS[name].lstrip("#")
        rgb = [int(hexcode[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        rgba[label_slice == code] = (*rgb, OVERLAY_ALPHA)
    return rgba


def plot_overlay(npz_path: Path | str, out_png: Path | str) -> Path:
    """Axial, coronal and sagittal slices through the tumour: reference (top) vs prediction (bottom).

    Slices are shown with the first voxel axis left-to-right and the second/third axis upwards
    (anterior/superior up for RAS+ volumes). The reference's whole-tumour outline is drawn on
    the prediction row too, so misses and over-segmentation are visible at a glance.
    """
    npz_path = Path(npz_path)
    case = _load_overlay(npz_path)
    image = case["image"].astype(np.float32)
    reference = case["reference"]
    prediction = case["prediction"]
    subject = str(case.get("subject_id", "unknown subject"))
    round_ = int(case["round"]) if "round" in case else None
    spacing = tuple(float(s) for s in case["spacing"]) if "spacing" in case else (1.0, 1.0, 1.0)
    convention = detect_convention(np.union1d(np.unique(reference), np.unique(prediction)))
    codes = CONVENTIONS[convention]

    cx, cy, cz = _tumour_centre(reference, prediction)
    head = _head_mask(image)
    bx, by, bz = _foreground_box(head, reference, prediction)
    # (title, slicer, (horizontal, vertical) voxel spacing) per view.
    views = (
        (f"axial z={cz}", lambda v: v[bx, by, cz], (spacing[0], spacing[1])),
        (f"coronal y={cy}", lambda v: v[bx, cy, bz], (spacing[0], spacing[2])),
        (f"sagittal x={cx}", lambda v: v[cx, by, bz], (spacing[1], spacing[2])),
    )
    # Grey window from the head only, so a large background does not wash the brain out.
    inside = image[head] if head.sum() > 0.01 * head.size else image[np.isfinite(image)]
    low, high = np.percentile(inside, [0.5, 99.5]) if inside.size else (0.0, 1.0)

    fig = Figure(figsize=(11, 8.2), layout="constrained")
    axes = fig.subplots(2, 3)
    reference_wt = reference > 0
    for column, (title, take, (dx, dy)) in enumerate(views):
        grey = take(image).T
        for row, (label_volume, row_name) in enumerate(((reference, "reference"), (prediction, "prediction"))):
            ax = axes[row, column]
            ax.imshow(grey, cmap="gray", vmin=low, vmax=high, origin="lower", aspect=dy / dx, interpolation="nearest")
            ax.imshow(_label_rgba(take(label_volume).T, codes), origin="lower", aspect=dy / dx, interpolation="nearest")
            if row == 1 and take(reference_wt).any():
                ax.contour(
                    take(reference_wt).T.astype(float),
                    levels=[0.5],
                    colors=OUTLINE_COLOUR,
                    linewidths=1.2,
                    origin="lower",
                )
            note = " (no tumour predicted)" if row == 1 and not prediction.any() else ""
            ax.set_title(f"{row_name}: {title}{note}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])

    dice_by_region = {
        region: dice(p, r)
        for region, p, r in zip(
            REGIONS, labels_to_regions(prediction, convention), labels_to_regions(reference, convention)
        )
    }
    header = f"{subject}" + (f", round {round_}" if round_ is not None else "")
    scores = "   ".join(f"Dice {region} {value:.3f}" for region, value in dice_by_region.items())
    fig.suptitle(f"Prediction overlay: {header}\n{scores}", fontsize=12)
    handles = [Patch(color=LABEL_COLOURS[name], alpha=0.8, label=LABEL_NAMES[name]) for name in codes]
    handles.append(Line2D([], [], color=OUTLINE_COLOUR, linewidth=1.5, label="reference tumour outline"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=4,
        fontsize=10,
        facecolor="0.25",
        labelcolor="white",
        edgecolor="0.25",
    )
    return save_png(fig, out_png)
