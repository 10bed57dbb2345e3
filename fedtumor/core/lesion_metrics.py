"""BraTS 2023 lesion-wise Dice and HD95 for one region (ET, TC or WT), in numpy/scipy.

The rules of the BraTS 2023 glioma challenge (the organisers' lesion-wise reference
script), applied to one boolean region mask at a time:

1. **Lesions** are the connected components of the reference with 26-connectivity
   (``scipy.ndimage.label`` with a 3x3x3 structure); prediction components likewise.
2. **Dilation.** The reference is dilated by 3 iterations of the 18-connectivity element
   (``generate_binary_structure(3, 2)``, voxels outside the array count as background).
   Reference lesions whose dilations touch (one 26-connected dilated component) are merged
   into one lesion; the dilated component is that lesion's matching zone.
3. **Matching.** Every prediction component with at least one voxel in a lesion's matching
   zone is a hit for that lesion; all its hits are merged and the lesion scores
   Dice(merged hits, lesion) and HD95(merged hits, lesion). A lesion without hits is a false
   negative and scores Dice 0 and HD95 :data:`LESION_HD95_PENALTY` = 374 mm.
4. **False positives** are prediction components with no voxel in any matching zone (the
   zones of small, dropped lesions included, so hitting a small lesion is never a false
   positive). Each scores Dice 0 and HD95 374 mm.
5. **Small lesions.** A lesion of at most :data:`MIN_LESION_VOLUME_MM3` = 50 mm^3 (voxel count
   times the voxel volume from ``spacing``, so the threshold is physical on any grid) is
   dropped from the scores after matching.
6. **Scores.** lesion-wise Dice = sum of kept lesions' Dice / (kept lesions + false
   positives); lesion-wise HD95 = (sum of kept lesions' HD95 + 374 x false positives) /
   (kept lesions + false positives). With no kept lesion and no false positive (both empty,
   or only small lesions) the scores are Dice 1.0 and HD95 0.0.
7. Each region is scored on its own; a leaderboard averages each region's score over
   subjects (:mod:`fedtumor.core.leaderboard`), never across regions.

HD95 per lesion is :func:`fedtumor.core.metrics.hd95` (MedPy's pooled 95th percentile,
which panoptica and the official ``brats-evaluation`` package also use). The 2023 script
used DeepMind's surfel-weighted ``max(p95(P->R), p95(R->P))`` instead, which can be larger
by a fraction of a voxel; docs/metrics.md lists this and every other difference from the
official package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fedtumor.core.metrics import _normalise_spacing, dice, hd95

DILATION_ITERATIONS = 3
"""Iterations of the 18-connectivity dilation that builds a lesion's matching zone (BraTS-GLI)."""
MIN_LESION_VOLUME_MM3 = 50.0
"""Reference lesions of at most this volume are dropped from the lesion-wise scores."""
LESION_HD95_PENALTY = 374.0
"""HD95 in mm of a missed lesion or a false-positive component (BraTS 2023)."""

_COMPONENTS = ndimage.generate_binary_structure(3, 3)  # 26-connectivity
_DILATION = ndimage.generate_binary_structure(3, 2)  # 18-connectivity, as the 2023 script


@dataclass(frozen=True)
class LesionScores:
    """Lesion-wise scores of one region plus the counts behind them.

    ``tp``/``fn`` count kept reference lesions with/without a hit, ``fp`` unmatched prediction
    components, ``small`` the reference lesions dropped for their volume.
    """

    lesion_dice: float
    lesion_hd95: float
    tp: int
    fn: int
    fp: int
    small: int

    def as_dict(self) -> dict[str, float]:
        """``{"lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fn", "lesion_fp"}``."""
        return {
            "lesion_dice": self.lesion_dice,
            "lesion_hd95": self.lesion_hd95,
            "lesion_tp": float(self.tp),
            "lesion_fn": float(self.fn),
            "lesion_fp": float(self.fp),
        }


def _union_box(first: tuple[slice, ...], others: list[tuple[slice, ...]]) -> tuple[slice, ...]:
    box = list(first)
    for other in others:
        box = [slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box, other)]
    return tuple(box)


def _grown_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of a non-empty ``mask`` grown by ``margin`` voxels, clipped to the array."""
    box = []
    for axis, size in enumerate(mask.shape):
        occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(occupied[0]) - margin, 0), min(int(occupied[-1]) + 1 + margin, size)))
    return tuple(box)


def lesion_scores(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = None,
    dilation_iterations: int = DILATION_ITERATIONS,
    min_volume_mm3: float = MIN_LESION_VOLUME_MM3,
) -> LesionScores:
    """BraTS 2023 lesion-wise Dice and HD95 of one 3D region mask (rules in the module docstring).

    Example:
        >>> ref = np.zeros((40, 40, 40), bool); ref[5:10, 5:10, 5:10] = True
        >>> pred = ref.copy(); pred[30:35, 30:35, 30:35] = True  # plus one false positive
        >>> s = lesion_scores(pred, ref)
        >>> (s.lesion_dice, s.lesion_hd95, s.tp, s.fp)
        (0.5, 187.0, 1, 1)
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if ref.ndim != 3:
        raise ValueError(f"lesion-wise metrics need 3D masks, got shape {ref.shape}")
    if int(dilation_iterations) != dilation_iterations or dilation_iterations < 0:
        raise ValueError(f"dilation_iterations must be an integer >= 0, got {dilation_iterations}")
    spacing = _normalise_spacing(spacing, ref.ndim)
    voxel_volume = float(np.prod(spacing))
    if not (pred.any() or ref.any()):
        return LesionScores(1.0, 0.0, tp=0, fn=0, fp=0, small=0)
    # Labelling and dilating a 240x240x155 volume costs about a second per region; the box
    # of pred | ref grown by the dilation holds every component and the whole dilated
    # reference (clipped at the array edge exactly as the full-volume dilation is).
    box = _grown_box(pred | ref, int(dilation_iterations))
    pred, ref = pred[box], ref[box]

    pred_components, n_pred = ndimage.label(pred, structure=_COMPONENTS)
    if ref.any() and dilation_iterations > 0:
        zone = ndimage.binary_dilation(ref, structure=_DILATION, iterations=int(dilation_iterations))
    else:
        zone = ref
    # One zone per merged lesion: the dilation of a union is the union of the dilations, so
    # the component of the dilated reference is exactly the merged lesion's own dilation.
    zones, n_lesions = ndimage.label(zone, structure=_COMPONENTS)
    zone_boxes = ndimage.find_objects(zones)
    pred_boxes = ndimage.find_objects(pred_components)

    matched = np.zeros(n_pred + 1, dtype=bool)
    dices: list[float] = []
    distances: list[float] = []
    tp = fn = small = 0
    for lesion_id in range(1, n_lesions + 1):
        zone_box = zone_boxes[lesion_id - 1]
        in_zone = zones[zone_box] == lesion_id
        hits = np.unique(pred_components[zone_box][in_zone])
        hits = hits[hits != 0]
        matched[hits] = True
        lesion_box = _union_box(zone_box, [pred_boxes[h - 1] for h in hits])
        lesion = ref[lesion_box] & (zones[lesion_box] == lesion_id)
        if int(lesion.sum()) * voxel_volume <= min_volume_mm3:
            small += 1
            continue
        if hits.size == 0:
            fn += 1
            dices.append(0.0)
            distances.append(LESION_HD95_PENALTY)
            continue
        tp += 1
        merged_hits = np.isin(pred_components[lesion_box], hits)
        dices.append(dice(merged_hits, lesion))
        distances.append(hd95(merged_hits, lesion, spacing))

    fp = int(n_pred - matched[1:].sum())
    count = len(dices) + fp
    if count == 0:
        return LesionScores(1.0, 0.0, tp=0, fn=0, fp=0, small=small)
    lesion_dice = float(sum(dices)) / count
    lesion_hd95 = (float(sum(distances)) + LESION_HD95_PENALTY * fp) / count
    return LesionScores(lesion_dice, lesion_hd95, tp=tp, fn=fn, fp=fp, small=small)
