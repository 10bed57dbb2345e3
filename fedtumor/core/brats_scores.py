"""Every BraTS score of one subject per region: legacy (2017-2021) next to BraTS 2023+.

Per region (ET, TC, WT) the nested dict holds

* legacy: ``dice``, ``hd95``, ``sensitivity``, ``specificity`` (:mod:`fedtumor.core.metrics`);
* BraTS 2023+: ``nsd`` (normalised surface Dice at 1 mm, :mod:`fedtumor.core.surface_dice`),
  ``lesion_dice`` and ``lesion_hd95`` (:mod:`fedtumor.core.lesion_metrics`);
* with ``counts=True`` also ``lesion_tp``, ``lesion_fn``, ``lesion_fp``.

Both label conventions (BraTS 2021, ET = 4; BraTS 2023, ET = 3) work: files and label maps
go through the same detection and checks as the legacy metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedtumor.core.lesion_metrics import lesion_scores
from fedtumor.core.metrics import load_region_pair, region_scores
from fedtumor.core.regions import REGIONS
from fedtumor.core.surface_dice import NSD_TOLERANCE_MM, normalized_surface_dice

LEGACY_METRICS: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity")
CHALLENGE_METRICS: tuple[str, ...] = ("nsd", "lesion_dice", "lesion_hd95")
"""The BraTS 2023+ scores a run's held-out evaluation adds (``nsd_et``, ``lesion_dice_et``, ...)."""
COUNT_METRICS: tuple[str, ...] = ("lesion_tp", "lesion_fn", "lesion_fp")


def challenge_region_scores(
    pred_regions: np.ndarray,
    ref_regions: np.ndarray,
    spacing: Sequence[float] | None = None,
    counts: bool = False,
    nsd_tolerance_mm: float = NSD_TOLERANCE_MM,
) -> dict[str, dict[str, float]]:
    """NSD and lesion-wise Dice/HD95 per region of ``(3, X, Y, Z)`` boolean ET/TC/WT masks.

    Example:
        >>> ref = np.zeros((3, 20, 20, 20), bool); ref[:, 5:12, 5:12, 5:12] = True
        >>> scores = challenge_region_scores(ref, ref)
        >>> scores["ET"]
        {'nsd': 1.0, 'lesion_dice': 1.0, 'lesion_hd95': 0.0}
    """
    pred_regions = np.asarray(pred_regions, dtype=bool)
    ref_regions = np.asarray(ref_regions, dtype=bool)
    if pred_regions.shape != ref_regions.shape:
        raise ValueError(f"prediction shape {pred_regions.shape} differs from reference shape {ref_regions.shape}")
    if pred_regions.ndim != 4 or pred_regions.shape[0] != len(REGIONS):
        raise ValueError(f"expected region masks of shape ({len(REGIONS)}, X, Y, Z), got {pred_regions.shape}")
    scores: dict[str, dict[str, float]] = {}
    for region, pred, ref in zip(REGIONS, pred_regions, ref_regions):
        lesions = lesion_scores(pred, ref, spacing).as_dict()
        scores[region] = {"nsd": normalized_surface_dice(pred, ref, spacing, nsd_tolerance_mm)}
        scores[region].update({name: lesions[name] for name in CHALLENGE_METRICS[1:]})
        if counts:
            scores[region].update({name: lesions[name] for name in COUNT_METRICS})
    return scores


def all_region_scores(
    pred_regions: np.ndarray, ref_regions: np.ndarray, spacing: Sequence[float] | None = None, counts: bool = True
) -> dict[str, dict[str, float]]:
    """Legacy metrics followed by the BraTS 2023+ ones, per region (see the module docstring)."""
    legacy = region_scores(pred_regions, ref_regions, spacing)
    challenge = challenge_region_scores(pred_regions, ref_regions, spacing, counts=counts)
    return {region: {**legacy[region], **challenge[region]} for region in REGIONS}


def score_files_all(
    pred_path: Path | str | None, ref_path: Path | str, counts: bool = True
) -> dict[str, dict[str, float]]:
    """:func:`all_region_scores` of two label files; a bad file raises a one-line DataError naming it.

    ``pred_path=None`` scores an empty prediction (a missing one, as BraTS counts it).

    Example:
        >>> scores = score_files_all("pred/X.nii.gz", "ref/X-seg.nii.gz")  # doctest: +SKIP
        >>> scores["ET"]["lesion_dice"]  # doctest: +SKIP
    """
    pred_regions, ref_regions, spacing = load_region_pair(pred_path, ref_path)
    return all_region_scores(pred_regions, ref_regions, spacing, counts=counts)
