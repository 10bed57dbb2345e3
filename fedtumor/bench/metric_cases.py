"""Test cases for comparing fedtumor's BraTS metrics with the official package.

Each writer saves ``<out>/<name>/pred.nii`` and ``ref.nii`` and returns a
:class:`~fedtumor.bench.official_eval.CasePair` named after the case:

* :func:`write_real_cases` - the real BraTS 2023 case (reference: its ``-seg``; prediction:
  the isen-20 segmentation with ET 4 mapped to 3) and three perturbations: a false-positive
  lesion added, a lesion removed (added to the reference only), the tumour split in two;
* :func:`write_synthetic_cases` - a 96^3, 1 mm case with three lesions (one shifted, one
  shrunk, one missed) and a false positive, and a case with a lesion under 50 mm^3;
* :func:`write_defect_cases` - inputs on which the official package is wrong: BraTS 2021
  labels (ET = 4) and anisotropic voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedtumor.bench.official_eval import CasePair

SYNTHETIC_SHAPE = (96, 96, 96)
REAL_CASE_ID = "BraTS-GLI-00001-000"
_ET_2023, _ET_2021 = 3, 4


def _save(path: Path, labels: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(path))
    return path


def _pair(out: Path, name: str, pred: np.ndarray, ref: np.ndarray, affine: np.ndarray) -> CasePair:
    folder = Path(out) / name
    # Uncompressed: gzip would take most of the time of writing a 240x240x155 case.
    return CasePair(name, _save(folder / "pred.nii", pred, affine), _save(folder / "ref.nii", ref, affine))


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.load(str(path))
    return np.asanyarray(image.dataobj).astype(np.uint8), image.affine


def _free_cube(occupied: np.ndarray, size: int, margin: int = 12) -> tuple[slice, ...]:
    """A cube of ``size`` voxels at least ``margin`` voxels from every occupied voxel."""
    from scipy import ndimage

    far = ndimage.distance_transform_edt(~occupied) > margin + size
    candidates = np.argwhere(far[margin:-margin, margin:-margin, margin:-margin]) + margin
    if not candidates.size:
        raise ValueError("no free space for an extra lesion")
    centre = candidates[len(candidates) // 2]
    return tuple(slice(int(c) - size // 2, int(c) - size // 2 + size) for c in centre)


def write_real_cases(case_2023: Path, isen_segmentation: Path, out: Path) -> list[CasePair]:
    """The real case and its three perturbations (see the module docstring)."""
    case_2023 = Path(case_2023)
    ref, affine = _load(case_2023 / f"{case_2023.name}-seg.nii.gz")
    pred, _ = _load(isen_segmentation)
    pred[pred == _ET_2021] = _ET_2023
    extra = _free_cube((ref > 0) | (pred > 0), size=8)

    with_false_positive = pred.copy()
    with_false_positive[extra] = _ET_2023  # ET, hence in TC and WT too: one FP lesion per region
    ref_with_second_lesion = ref.copy()
    ref_with_second_lesion[extra] = _ET_2023

    split = pred.copy()
    tumour_slices = np.flatnonzero((pred > 0).any(axis=(1, 2)))
    middle = int(tumour_slices[len(tumour_slices) // 2])
    split[middle - 1 : middle + 2] = 0  # a 3-voxel gap cuts every region in two

    return [
        _pair(out, "real-isen20", pred, ref, affine),
        _pair(out, "real-fp-added", with_false_positive, ref, affine),
        _pair(out, "real-lesion-removed", pred, ref_with_second_lesion, affine),
        _pair(out, "real-lesion-split", split, ref, affine),
    ]


def _ball(shape: tuple[int, ...], centre: tuple[int, ...], radius: float) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((axis - c) ** 2 for axis, c in zip(grid, centre)) <= radius**2


def _lesion(labels: np.ndarray, centre: tuple[int, ...], radius: int) -> None:
    """Oedema ball, enhancing ring inside it, necrotic core inside that (BraTS 2023 labels)."""
    labels[_ball(labels.shape, centre, radius)] = 2
    labels[_ball(labels.shape, centre, radius - 2)] = _ET_2023
    labels[_ball(labels.shape, centre, radius - 4)] = 1


def synthetic_lesions() -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference): lesion A shifted 1 voxel, B shrunk, C missed, one false positive."""
    ref = np.zeros(SYNTHETIC_SHAPE, np.uint8)
    pred = np.zeros(SYNTHETIC_SHAPE, np.uint8)
    _lesion(ref, (25, 25, 25), 9)
    _lesion(ref, (70, 30, 60), 8)
    _lesion(ref, (30, 70, 70), 7)
    _lesion(pred, (26, 25, 25), 9)
    _lesion(pred, (70, 30, 60), 7)
    _lesion(pred, (75, 75, 20), 6)
    return pred, ref


def write_synthetic_cases(out: Path) -> list[CasePair]:
    """The several-lesion case and a case whose only difference is a 27 mm^3 missed lesion."""
    affine = np.eye(4)
    pred, ref = synthetic_lesions()
    small_ref = np.zeros(SYNTHETIC_SHAPE, np.uint8)
    _lesion(small_ref, (40, 40, 40), 9)
    small_pred = small_ref.copy()
    small_ref[75:78, 75:78, 75:78] = _ET_2023  # 27 mm^3: dropped by the 2023 rules
    return [
        _pair(out, "synthetic-lesions", pred, ref, affine),
        _pair(out, "synthetic-small-lesion", small_pred, small_ref, affine),
    ]


def write_defect_cases(case_2021: Path | None, isen_segmentation: Path | None, out: Path) -> list[CasePair]:
    """BraTS 2021 labels (the real case, ET = 4 in both files; skipped when ``case_2021`` is None)
    and the several-lesion case on 1 x 1 x 3 mm voxels."""
    pairs = []
    if case_2021 is not None:
        case_2021 = Path(case_2021)
        ref, affine = _load(case_2021 / f"{case_2021.name}_seg.nii.gz")
        pred, _ = _load(isen_segmentation)
        pairs.append(_pair(out, "real-2021-labels", pred, ref, affine))
    pred, ref = synthetic_lesions()
    pairs.append(_pair(out, "synthetic-anisotropic", pred, ref, np.diag([1.0, 1.0, 3.0, 1.0])))
    return pairs


def build_cases(realdata: Path | None, out: Path) -> list[CasePair]:
    """Every comparison case: the real ones when ``realdata`` holds the BraTS case, then the rest.

    ``realdata`` is the folder with ``brats2023/``, ``brats2021/`` and ``extra_segmentations/``
    (``../shared/realdata`` beside the checkout); ``None`` or a missing case skips the real cases.
    """
    out = Path(out)
    real = None if realdata is None else Path(realdata)
    isen = None if real is None else real / "extra_segmentations" / REAL_CASE_ID / "isen-20_bratstoolkit.nii.gz"
    pairs: list[CasePair] = []
    if isen is not None and isen.is_file() and (real / "brats2023" / REAL_CASE_ID).is_dir():
        pairs += write_real_cases(real / "brats2023" / REAL_CASE_ID, isen, out)
    pairs += write_synthetic_cases(out)
    case_2021 = None if real is None else real / "brats2021" / REAL_CASE_ID
    has_2021 = case_2021 is not None and case_2021.is_dir() and isen is not None and isen.is_file()
    pairs += write_defect_cases(case_2021 if has_2021 else None, isen, out)
    return pairs
