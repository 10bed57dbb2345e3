"""Does a case look like BraTS preprocessing? Warnings for scans that came straight off a scanner.

BraTS cases are co-registered to the SRI24 atlas (a 240x240x155 grid of 1 mm isotropic voxels)
and skull-stripped: every voxel outside the brain is exactly 0. The pipeline relies on that: its
brain mask is "any modality non-zero", so a raw scan (skull, scalp and a noisy background) makes
the whole head "brain" and a model trained on BraTS paints tumour across it. Such a case still
*runs*, so each finding here is a warning (``fedtumor check-data --strict`` fails on it), and
says what BraTS expects and how to get there: the BraTS preprocessing (:data:`BRATS_TOOLS`).

Checks, per image (never the segmentation):

* **skull stripping**: the non-zero voxels, as a fraction of the grid and as a volume. A
  skull-stripped brain fills at most :data:`MAX_NONZERO_FRACTION` of the grid and
  :data:`MAX_BRAIN_ML` millilitres; more of either means a non-zero background or a head.
* **voxel size**: 1 mm isotropic (within :data:`SPACING_TOLERANCE_MM`); anisotropic scans
  (5.5 mm slices) are named as such. Once per subject, on its first image.
* **grid**: 240x240x155 (SRI24). Once per subject, on its first image. Modalities on
  *different* grids are a problem, not a warning (``validation``): they cannot be stacked.

Calibration (tests/data_loaders/test_onboarding.py rebuilds every row but the last):

=====================================================  ================  ===============
case                                                   non-zero voxels   non-zero volume
=====================================================  ================  ===============
real BraTS-GLI-00001-000, each modality                18.4 %            1639 mL
synthetic cohort (8 subjects, 64^3 at 3 mm)            19.9 - 22.0 %     1412 - 1557 mL
real brain cropped to its bounding box                 45 %              1639 mL
real case + 13 mm skull and scalp, zero background     31.5 %            2811 mL
same head with scanner noise in the background         100 %             8928 mL
raw scans of the issue (any modality non-zero)         97 %              -
=====================================================  ================  ===============

So :data:`MAX_NONZERO_FRACTION` = 0.6 sits above a brain cropped tight to its bounding box (a
brain fills under half of it) and far below any noisy background; :data:`MAX_BRAIN_ML` =
2400 mL sits above the largest adult intracranial volumes (about 2 L; BraTS brains 1.2-1.8 L)
and below the real brain with its skull and scalp put back (2.8 L; a real head adds face and neck).

Orientation is not checked: BraTS files are LPS (``nibabel.aff2axcodes`` gives L, P, S on the
real case), but the pipeline reorients every image with TorchIO's ``ToCanonical``, so an RAS copy
of a BraTS case is just as good; a warning would ask a site to change what does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)  # the SRI24 atlas grid
BRATS_SPACING_MM = 1.0
SPACING_TOLERANCE_MM = 0.05  # resampling tools round 1 mm to 0.9999 or 1.0001
ANISOTROPY_RATIO = 1.5  # largest / smallest voxel side above which a scan is called anisotropic
MAX_NONZERO_FRACTION = 0.6
MAX_BRAIN_ML = 2400.0
BRATS_TOOLS = (
    "the BraTS preprocessing (BraTS Toolkit, FeTS front-end or CaPTk: SRI24 co-registration, 1 mm resampling, "
    "skull stripping)"
)


@dataclass(frozen=True)
class NonZeroMeasure:
    """How much of an image is non-zero: a fraction of its grid and a volume in millilitres.

    Example:
        >>> import numpy as np
        >>> measure = nonzero_measure(np.ones((10, 10, 10)), (1.0, 1.0, 1.0))
        >>> measure.fraction, measure.volume_ml, measure.looks_skull_stripped
        (1.0, 1.0, False)
    """

    fraction: float
    volume_ml: float

    @property
    def looks_skull_stripped(self) -> bool:
        return self.fraction <= MAX_NONZERO_FRACTION and self.volume_ml <= MAX_BRAIN_ML


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive voxel sides in mm, not {spacing!r}")
    return values


def nonzero_measure(data: np.ndarray, spacing: Sequence[float]) -> NonZeroMeasure:
    """The non-zero voxels of ``data`` (a 3D image, voxel sides ``spacing`` in mm).

    Example:
        >>> nonzero_measure(np.pad(np.ones((2, 2, 2)), 1), (2.0, 2.0, 2.0)).volume_ml
        0.064
    """
    spacing = _check_spacing(spacing)
    data = np.asanyarray(data)
    if data.size == 0:
        raise ValueError("data is empty")
    count = int(np.count_nonzero(data))
    return NonZeroMeasure(fraction=count / data.size, volume_ml=count * float(np.prod(spacing)) / 1000.0)


def _mm(values: Sequence[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def skull_strip_warning(data: np.ndarray, spacing: Sequence[float]) -> str | None:
    """Why ``data`` does not look skull-stripped, or None when it does.

    Example:
        >>> head = np.random.default_rng(0).normal(100, 10, (20, 20, 20))
        >>> skull_strip_warning(head, (1, 1, 1)).startswith("looks not skull-stripped")
        True
    """
    measure = nonzero_measure(data, spacing)
    if measure.looks_skull_stripped:
        return None
    return (
        f"looks not skull-stripped: {measure.fraction:.0%} of the voxels ({measure.volume_ml:.0f} mL) are non-zero, "
        f"a skull-stripped brain at most {MAX_NONZERO_FRACTION:.0%} and {MAX_BRAIN_ML:.0f} mL, so the brain mask "
        f"would cover the head; BraTS expects 0 outside the brain: skull-strip with {BRATS_TOOLS}"
    )


def spacing_warning(spacing: Sequence[float]) -> str | None:
    """Why the voxel size ``spacing`` (mm) is not BraTS's 1 mm isotropic, or None when it is.

    Example:
        >>> spacing_warning((1.0, 1.0, 5.5)).startswith("voxel size 1x1x5.5 mm is anisotropic")
        True
        >>> spacing_warning((1.0, 1.0, 1.0)) is None
        True
    """
    spacing = _check_spacing(spacing)
    if all(abs(s - BRATS_SPACING_MM) <= SPACING_TOLERANCE_MM for s in spacing):
        return None
    kind = "is anisotropic" if max(spacing) / min(spacing) > ANISOTROPY_RATIO else "is not 1 mm"
    return f"voxel size {_mm(spacing)} mm {kind}; BraTS expects 1x1x1 mm: resample to 1 mm isotropic with {BRATS_TOOLS}"


def grid_warning(shape: Sequence[int]) -> str | None:
    """Why the image grid ``shape`` is not the 240x240x155 SRI24 grid of BraTS, or None when it is.

    Example:
        >>> grid_warning((64, 64, 64)).startswith("grid 64x64x64 is not")
        True
    """
    shape = tuple(int(n) for n in shape)
    if shape == BRATS_SHAPE:
        return None
    return (
        f"grid {_mm(shape)} is not the {_mm(BRATS_SHAPE)} SRI24 grid of BraTS: co-register every modality "
        f"to SRI24 with {BRATS_TOOLS}"
    )


def unplaced_file_warning(layout: str, expected: Sequence[str]) -> str:
    """Why a file in a subject folder is ignored: its name matches no modality ``layout`` expects.

    Example:
        >>> unplaced_file_warning("brats2021", ["S_t1.nii.gz", "S_seg.nii.gz"])
        'matches no modality of the brats2021 layout, so it is ignored; expected S_t1.nii.gz, S_seg.nii.gz'
    """
    if not expected:
        raise ValueError("expected must name at least one file")
    return f"matches no modality of the {layout} layout, so it is ignored; expected {', '.join(expected)}"
