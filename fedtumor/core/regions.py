"""BraTS label conventions and the nested evaluation regions ET, TC and WT."""

from __future__ import annotations

import numpy as np

REGIONS: tuple[str, ...] = ("ET", "TC", "WT")

# Label values per convention: necrotic core, oedema, enhancing tumour.
BRATS2021_LABELS = {"NCR": 1, "ED": 2, "ET": 4}
BRATS2023_LABELS = {"NCR": 1, "ED": 2, "ET": 3}
CONVENTIONS = {"brats2021": BRATS2021_LABELS, "brats2023": BRATS2023_LABELS}


def allowed_labels(convention: str) -> set[int]:
    """Label values that may appear in a segmentation of ``convention`` (0 included)."""
    return {0, *CONVENTIONS[convention].values()}


def detect_convention(label_values: set[int] | np.ndarray) -> str:
    """Guess the label convention from the values present: a 3 means BraTS 2023."""
    values = set(np.unique(label_values).tolist()) if isinstance(label_values, np.ndarray) else set(label_values)
    if 3 in values and 4 not in values:
        return "brats2023"
    return "brats2021"


def labels_to_regions(label: np.ndarray, convention: str = "brats2021") -> np.ndarray:
    """Boolean array of shape ``(3, *label.shape)``: ET, TC = NCR+ET, WT = NCR+ED+ET."""
    codes = CONVENTIONS[convention]
    et = label == codes["ET"]
    tc = et | (label == codes["NCR"])
    wt = tc | (label == codes["ED"])
    return np.stack([et, tc, wt])


def regions_to_labels(regions: np.ndarray, convention: str = "brats2021") -> np.ndarray:
    """Inverse of :func:`labels_to_regions` for (3, ...) boolean maps.

    Nesting is enforced the way BraTS submissions do it: a voxel is ET if ET is on,
    else NCR if TC is on, else ED if WT is on.
    """
    codes = CONVENTIONS[convention]
    et, tc, wt = (np.asarray(r, dtype=bool) for r in regions)
    label = np.zeros(et.shape, dtype=np.uint8)
    label[wt] = codes["ED"]
    label[tc] = codes["NCR"]
    label[et] = codes["ET"]
    return label
