"""BraTS segmentation metrics per region (ET, TC, WT), in numpy/scipy only.

Conventions (BraTS 2021 evaluation, HD95 as in MedPy ``medpy.metric.binary.hd95``):

* Inputs are boolean masks on one voxel grid; ``spacing`` is the voxel size in mm per axis
  (the NIfTI header zooms), so HD95 is in mm.
* Dice = 2|P & R| / (|P| + |R|). Both empty -> 1.0; exactly one empty -> 0.0.
* HD95, the 95th-percentile Hausdorff distance, exactly as MedPy's
  ``medpy.metric.binary.hd95``, which CBICA's Hausdorff95 tool used by the BraTS 2017-2021
  evaluation (CaPTk) wraps:

  - the *surface* of a mask is its voxels removed by one binary erosion with the 3D
    connectivity-1 structuring element (6-neighbourhood), treating everything outside
    the array as background, so a mask touching the image edge has a surface there;
  - the directed distances P->R are, for every surface voxel of P, the Euclidean distance
    (in mm, via ``distance_transform_edt(..., sampling=spacing)``) between voxel centres
    to the nearest surface voxel of R; R->P likewise;
  - HD95 = percentile(concatenate(d(P->R), d(R->P)), 95): both directions *pooled*, with
    numpy's default linear interpolation between order statistics. MONAI and DeepMind's
    surface-distance (used for BraTS 2023) instead take max(p95(P->R), p95(R->P)), which comes
    out larger when one direction holds the far outliers (tests pin the difference);
  - both empty -> 0.0; exactly one empty -> ``HD95_EMPTY_PENALTY`` = 373.1287 mm, the
    diagonal of the 240 x 240 x 155 BraTS image at 1 mm, as BraTS scores it.
* Sensitivity = TP / (TP + FN). With an empty reference there is nothing to find: 1.0 when
  the prediction is empty too, else 0.0 (the Dice convention, so false alarms on a tumour
  without ET are penalised rather than hidden).
* Specificity = TN / (TN + FP) over the whole volume (background included, as BraTS does).
  With no reference negatives (the reference fills the volume) it is 1.0: nothing can be a
  false positive.

Label maps use BraTS 2021 values (0, 1 NCR, 2 ED, 4 ET) or BraTS 2023 (ET written as 3),
auto-detected per input, so predictions and references of either convention can be mixed.
Every problem with an input file is raised as a one-line :class:`~fedtumor.core.errors.DataError`
naming the file.

The BraTS 2023+ metrics build on :func:`surface_distances` here: normalised surface Dice in
:mod:`fedtumor.core.surface_dice`, lesion-wise Dice/HD95 in :mod:`fedtumor.core.lesion_metrics`,
all of them per region in :mod:`fedtumor.core.brats_scores` (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from fedtumor.core.errors import DataError
from fedtumor.core.regions import REGIONS, allowed_labels, detect_convention, labels_to_regions

HD95_EMPTY_PENALTY = 373.1287
"""HD95 when exactly one of prediction and reference is empty: sqrt(240^2 + 240^2 + 155^2)."""

METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity")

AFFINE_ATOL = 1e-3

_CONVENTION_TITLES = {"brats2021": "BraTS 2021", "brats2023": "BraTS 2023"}


# ------------------------------------------------------------------ binary metrics


def _check_same_shape(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two boolean masks; both empty -> 1.0, exactly one empty -> 0.0."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    _check_same_shape(pred, ref)
    pred_size, ref_size = int(pred.sum()), int(ref.sum())
    if pred_size + ref_size == 0:
        return 1.0
    overlap = int(np.count_nonzero(pred & ref))
    return 2.0 * overlap / (pred_size + ref_size)


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """TP / (TP + FN); with an empty reference: 1.0 if the prediction is empty, else 0.0."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    _check_same_shape(pred, ref)
    ref_size = int(ref.sum())
    if ref_size == 0:
        return 1.0 if not pred.any() else 0.0
    return int(np.count_nonzero(pred & ref)) / ref_size


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """TN / (TN + FP) over the whole volume; 1.0 when the reference has no negatives."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    _check_same_shape(pred, ref)
    negatives = ref.size - int(ref.sum())
    if negatives == 0:
        return 1.0
    false_positives = int(np.count_nonzero(pred & ~ref))
    return (negatives - false_positives) / negatives


def _normalise_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in np.ravel(spacing))
    if len(values) != ndim:
        raise ValueError(f"spacing {values} has {len(values)} entries for a {ndim}-D mask")
    if not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing {values} must be positive and finite")
    return values


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` removed by one erosion with the connectivity-1 element."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    # border_value=0: outside the array counts as background, so voxels on the array edge
    # are surface voxels -- which also makes a tight crop give the full-volume answer.
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1, border_value=0)


def _directed_surface_distances(
    from_surface: np.ndarray, to_surface: np.ndarray, spacing: tuple[float, ...]
) -> np.ndarray:
    """Distance in mm from each voxel of ``from_surface`` to the nearest voxel of ``to_surface``."""
    distance_to_surface = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
    return distance_to_surface[from_surface]


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Smallest box holding every True voxel (``mask`` must not be empty)."""
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(int(occupied[0]), int(occupied[-1]) + 1))
    return tuple(box)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance in mm, the MedPy / BraTS 2021 definition.

    ``percentile(concatenate(d(P->R), d(R->P)), 95)`` (both directions pooled, linear
    interpolation) where d(A->B) are the distances from every surface voxel of A (voxels
    removed by one connectivity-1 erosion, array edge counted as background) to the nearest
    surface voxel of B, with ``spacing`` the voxel size in mm per axis (default 1).
    Both empty -> 0.0; exactly one empty -> :data:`HD95_EMPTY_PENALTY`.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    _check_same_shape(pred, ref)
    spacing = _normalise_spacing(spacing, pred.ndim)
    pred_empty, ref_empty = not pred.any(), not ref.any()
    if pred_empty and ref_empty:
        return 0.0
    if pred_empty or ref_empty:
        return HD95_EMPTY_PENALTY

    pred_to_ref, ref_to_pred = surface_distances(pred, ref, spacing)
    return float(np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95))


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(d(P->R), d(R->P)) in mm between the surfaces of two non-empty masks, as :func:`hd95` uses.

    Shared by HD95, the normalised surface Dice and the lesion-wise metrics.

    Example:
        >>> mask = np.zeros((5, 5, 5), bool); mask[1:4, 1:4, 1:4] = True
        >>> [float(d.max()) for d in surface_distances(mask, mask)]
        [0.0, 0.0]
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    _check_same_shape(pred, ref)
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    spacing = _normalise_spacing(spacing, pred.ndim)
    # Distance transforms on a full 240x240x155 volume cost seconds per region; every
    # surface voxel lies in the bounding box of pred | ref, and the distances between them
    # do not depend on the array around them, so the tight box gives the same answer.
    box = _bounding_box(pred | ref)
    pred_surface, ref_surface = _surface(pred[box]), _surface(ref[box])
    pred_to_ref = _directed_surface_distances(pred_surface, ref_surface, spacing)
    ref_to_pred = _directed_surface_distances(ref_surface, pred_surface, spacing)
    return pred_to_ref, ref_to_pred


# ------------------------------------------------------------------ regions and label maps


def region_scores(
    pred_regions: np.ndarray, ref_regions: np.ndarray, spacing: Sequence[float] | None = None
) -> dict[str, dict[str, float]]:
    """Dice, HD95, sensitivity and specificity per region.

    ``pred_regions`` and ``ref_regions`` are boolean arrays of shape ``(3, X, Y, Z)`` in the
    order of :data:`fedtumor.core.regions.REGIONS` (ET, TC, WT); ``spacing`` is the voxel size in
    mm of the spatial axes. Returns ``{"ET": {"dice", "hd95", "sensitivity",
    "specificity"}, "TC": ..., "WT": ...}`` with plain floats.
    """
    pred_regions = np.asarray(pred_regions, dtype=bool)
    ref_regions = np.asarray(ref_regions, dtype=bool)
    _check_same_shape(pred_regions, ref_regions)
    if pred_regions.ndim < 2 or pred_regions.shape[0] != len(REGIONS):
        raise ValueError(f"expected region masks of shape ({len(REGIONS)}, ...), got {pred_regions.shape}")
    scores: dict[str, dict[str, float]] = {}
    for region, pred, ref in zip(REGIONS, pred_regions, ref_regions):
        scores[region] = {
            "dice": dice(pred, ref),
            "hd95": hd95(pred, ref, spacing),
            "sensitivity": sensitivity(pred, ref),
            "specificity": specificity(pred, ref),
        }
    return scores


def _present_values(values: np.ndarray) -> set:
    """Distinct values of an integer array; bincount is much faster than unique on volumes."""
    if values.size == 0:
        return set()
    low, high = int(values.min()), int(values.max())
    if 0 <= low and high < 65536:
        return set(np.flatnonzero(np.bincount(values.ravel())).tolist())
    return set(np.unique(values).tolist())


def _format_values(values: set) -> str:
    # Braces, not brackets: the CLI prints errors through rich, which eats [markup].
    return "{" + ", ".join(str(v) for v in sorted(values)) + "}"


def _validated_label_map(
    label: np.ndarray, role: str, convention: str | None, path: Path | str | None = None
) -> tuple[np.ndarray, str]:
    """Integer copy of ``label`` and its convention; a DataError naming ``role``/``path`` if bad."""
    label = np.asarray(label)
    if label.dtype == bool:
        label = label.astype(np.uint8)
    if not np.issubdtype(label.dtype, np.number):
        raise DataError(f"{role} has non-numeric data of type {label.dtype}", path=path)
    if np.issubdtype(label.dtype, np.complexfloating):
        raise DataError(f"{role} has complex data of type {label.dtype}", path=path)
    if np.issubdtype(label.dtype, np.floating):
        if np.isnan(label).any():
            raise DataError(f"{role} has NaN voxels", path=path)
        if not np.isfinite(label).all():
            raise DataError(f"{role} has infinite voxels", path=path)
        fractional = label[label != np.round(label)]
        if fractional.size:
            raise DataError(f"{role} has non-integer label values (e.g. {float(fractional[0]):g})", path=path)
        label = label.astype(np.int64)
    present = _present_values(label)
    if convention is None:
        convention = detect_convention(present)
    if convention not in _CONVENTION_TITLES:
        raise ValueError(f"unknown label convention {convention!r}; use one of {sorted(_CONVENTION_TITLES)}")
    allowed = allowed_labels(convention)
    unknown = present - allowed
    if unknown:
        hint = " (3 and 4 both present: BraTS 2023 and 2021 ET labels mixed)" if {3, 4} <= present else ""
        raise DataError(
            f"{role} has label values {_format_values(unknown)} outside the "
            f"{_CONVENTION_TITLES[convention]} labels {_format_values(allowed)}{hint}",
            path=path,
        )
    return label, convention


def score_label_maps(
    pred_label: np.ndarray,
    ref_label: np.ndarray,
    spacing: Sequence[float] | None = None,
    pred_convention: str | None = None,
    ref_convention: str | None = None,
) -> dict[str, dict[str, float]]:
    """Score two integer label maps region by region (see :func:`region_scores`).

    Each map's convention ("brats2021": ET = 4, "brats2023": ET = 3) is detected with
    :func:`fedtumor.core.regions.detect_convention` when not given, so a BraTS 2023 prediction can
    be scored against a BraTS 2021 reference and vice versa. NaN, non-integer or unknown
    labels raise :class:`DataError` naming the input ("prediction" or "reference").
    """
    pred_label, pred_convention = _validated_label_map(pred_label, "prediction", pred_convention)
    ref_label, ref_convention = _validated_label_map(ref_label, "reference", ref_convention)
    if pred_label.shape != ref_label.shape:
        raise DataError(f"prediction shape {pred_label.shape} differs from reference shape {ref_label.shape}")
    return region_scores(
        labels_to_regions(pred_label, pred_convention), labels_to_regions(ref_label, ref_convention), spacing
    )


# ------------------------------------------------------------------ files


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load_segmentation(path: Path):
    """(data, affine, zooms) of a 3D segmentation; any failure is a DataError naming ``path``."""
    import nibabel as nib  # local: importing fedtumor.core.metrics stays cheap

    if not path.exists():
        raise DataError("file not found", path=path)
    if not path.is_file():
        raise DataError("not a file", path=path)
    try:
        image = nib.load(str(path))
        # Force the read here: nibabel loads lazily, and a truncated .nii.gz only fails
        # when the voxels are decompressed.
        data = np.asanyarray(image.dataobj)
        affine = np.asarray(image.affine, dtype=float)
        zooms = tuple(float(z) for z in image.header.get_zooms())
    except Exception as exc:  # nibabel, gzip, zlib and EOFError all mean "unreadable"
        raise DataError(f"cannot read segmentation ({_one_line(exc)})", path=path) from None
    # Some tools write (X, Y, Z, 1); a trailing singleton axis carries no information.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"expected a 3D segmentation, got shape {data.shape}", path=path)
    if affine is None or affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError("has no valid affine", path=path)
    return data, affine, zooms[:3]


def load_region_pair(pred_path: Path | str | None, ref_path: Path | str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(prediction regions, reference regions, reference voxel size in mm) of two label files.

    The two must have the same shape and affine (``np.allclose``, atol 1e-3); the voxel
    spacing comes from the reference header zooms. Regions are boolean ``(3, X, Y, Z)``
    arrays (ET, TC, WT), each file's label convention detected on its own. Every problem
    (missing, unreadable, corrupt or truncated file, shape or affine mismatch, NaN,
    non-integer or unknown labels) raises a one-line :class:`DataError` naming the file.
    ``pred_path=None`` stands for an empty prediction (how BraTS scores a missing one).
    """
    ref_path = Path(ref_path)
    ref_data, ref_affine, ref_zooms = _load_segmentation(ref_path)
    if pred_path is None:
        pred_path, pred_data, pred_affine = ref_path, np.zeros(ref_data.shape, np.uint8), ref_affine
    else:
        pred_path = Path(pred_path)
        pred_data, pred_affine, _ = _load_segmentation(pred_path)
    if pred_data.shape != ref_data.shape:
        raise DataError(
            f"shape {pred_data.shape} does not match reference {ref_path} shape {ref_data.shape}", path=pred_path
        )
    if not np.allclose(pred_affine, ref_affine, atol=AFFINE_ATOL):
        raise DataError(
            f"affine does not match reference {ref_path} (max difference "
            f"{float(np.abs(pred_affine - ref_affine).max()):.4g}); resample onto the reference grid",
            path=pred_path,
        )
    if not all(np.isfinite(z) and z > 0 for z in ref_zooms):
        raise DataError(f"voxel sizes {ref_zooms} in the header are not positive", path=ref_path)
    pred_label, pred_convention = _validated_label_map(pred_data, "prediction", None, path=pred_path)
    ref_label, ref_convention = _validated_label_map(ref_data, "reference", None, path=ref_path)
    return labels_to_regions(pred_label, pred_convention), labels_to_regions(ref_label, ref_convention), ref_zooms


def score_files(pred_path: Path | str, ref_path: Path | str) -> dict[str, dict[str, float]]:
    """Score a predicted segmentation file against a reference file (NIfTI, via nibabel).

    Files are read and checked by :func:`load_region_pair`; returns :func:`region_scores`'
    nested dict of the legacy metrics.
    """
    return region_scores(*load_region_pair(pred_path, ref_path))


def mean_dice(metrics: dict[str, float]) -> float:
    """Mean of the ET, TC and WT Dice in a metrics mapping (``dice_et``, ``dice_tc``, ``dice_wt``)."""
    return (metrics["dice_et"] + metrics["dice_tc"] + metrics["dice_wt"]) / 3
