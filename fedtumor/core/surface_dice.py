"""Normalised surface Dice (NSD) at a tolerance in mm, as the BraTS 2025 evaluation reports it.

Definition (the one ``panoptica`` implements and the official ``brats-evaluation`` package
reports as ``global_nsd`` / ``lesionwise_nsd``):

* surfaces and distances are those of :func:`fedtumor.core.metrics.surface_distances`: the
  voxels removed by one connectivity-1 erosion, Euclidean distances in mm between voxel
  centres (``spacing`` = voxel size per axis);
* NSD = (fraction of prediction-surface voxels within ``tolerance_mm`` of the reference
  surface + fraction of reference-surface voxels within ``tolerance_mm`` of the prediction
  surface) / 2. "Within" is ``<=``. Each surface is weighted by its own voxel count, so this
  is *not* DeepMind's surfel-area-weighted surface Dice (Nikolov et al.), which pools the two
  surfaces; the two agree when both surfaces have the same number of voxels;
* the tolerance is :data:`NSD_TOLERANCE_MM` = 1.0 mm unless given: panoptica's default is the
  smallest voxel size, which is 1 mm on the BraTS 1 mm grid. fedtumor keeps it in mm on
  every grid so scores at other spacings mean the same physical tolerance;
* both masks empty -> 1.0; exactly one empty -> 0.0 (the Dice convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedtumor.core.metrics import surface_distances

NSD_TOLERANCE_MM = 1.0
"""Default NSD tolerance in mm (panoptica's default on the 1 mm BraTS grid)."""


def normalized_surface_dice(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = None,
    tolerance_mm: float = NSD_TOLERANCE_MM,
) -> float:
    """Normalised surface Dice of two boolean masks at ``tolerance_mm`` (see the module docstring).

    Example:
        >>> ref = np.zeros((8, 8, 8), bool); ref[2:6, 2:6, 2:6] = True
        >>> pred = np.roll(ref, 1, axis=0)
        >>> normalized_surface_dice(pred, ref, tolerance_mm=1.0)
        1.0
        >>> normalized_surface_dice(pred, ref, tolerance_mm=0.5) < 1.0
        True
    """
    if not (np.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm}")
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    pred_empty, ref_empty = not pred.any(), not ref.any()
    if pred_empty and ref_empty:
        return 1.0
    if pred_empty or ref_empty:
        return 0.0
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, spacing)
    return float((np.mean(pred_to_ref <= tolerance_mm) + np.mean(ref_to_pred <= tolerance_mm)) / 2)
