"""Write tiny fake subjects (8^3 NIfTI volumes) in the BraTS / FeTS layouts, for fast tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

# Canonical modality -> file suffix, per layout; "seg" is the label.
LAYOUT_SUFFIXES = {
    "brats2021": {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"},
    "fets2022": {"t1": "t1", "t1ce": "t1gd", "t2": "t2", "flair": "flair", "seg": "seg"},
    "brats2023": {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"},
}
SEPARATOR = {"brats2021": "_", "fets2022": "_", "brats2023": "-"}
ALL_MODALITIES = ("t1", "t1ce", "t2", "flair")


def scan_path(folder: Path, subject_id: str, modality: str, layout: str = "brats2021", ext: str = ".nii.gz") -> Path:
    """Where ``layout`` stores ``modality`` ("seg" for the label) of ``subject_id`` inside ``folder``."""
    return Path(folder) / f"{subject_id}{SEPARATOR[layout]}{LAYOUT_SUFFIXES[layout][modality]}{ext}"


def write_volume(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``data`` as NIfTI at ``path`` (1 mm isotropic unless ``affine`` says otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def default_label(shape: tuple[int, ...] = (8, 8, 8), layout: str = "brats2021") -> np.ndarray:
    """A cube of oedema around a core of necrosis and enhancing tumour, in the layout's label values."""
    label = np.zeros(shape, dtype=np.uint8)
    centre = tuple(n // 2 for n in shape)
    label[tuple(slice(max(c - 3, 0), c + 3) for c in centre)] = 2  # oedema
    label[tuple(slice(max(c - 2, 0), c + 2) for c in centre)] = 1  # necrotic core
    label[tuple(slice(max(c - 1, 0), c + 1) for c in centre)] = 3 if layout == "brats2023" else 4  # enhancing
    return label


def write_subject(
    root: Path,
    subject_id: str,
    layout: str = "brats2021",
    shape: tuple[int, ...] = (8, 8, 8),
    labels: np.ndarray | None = None,
    modalities: tuple[str, ...] = ALL_MODALITIES,
    with_label: bool = True,
    ext: str = ".nii.gz",
    affine: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Write ``root/subject_id/`` with the given canonical ``modalities`` and a label; return the folder.

    ``layout`` is "brats2021", "fets2022" (``_t1gd``) or "brats2023" (``-t1n`` ..., ET = 3).
    ``labels`` defaults to :func:`default_label`; ``with_label=False`` writes no segmentation.
    """
    if layout not in LAYOUT_SUFFIXES:
        raise ValueError(f"layout must be one of {', '.join(LAYOUT_SUFFIXES)}, not {layout!r}")
    unknown = set(modalities) - set(ALL_MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; use {ALL_MODALITIES}")
    folder = Path(root) / subject_id
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for modality in modalities:
        image = rng.normal(100.0, 10.0, size=shape).astype(np.float32)
        write_volume(scan_path(folder, subject_id, modality, layout, ext), image, affine)
    if with_label:
        label = default_label(shape, layout) if labels is None else labels
        write_volume(scan_path(folder, subject_id, "seg", layout, ext), label, affine)
    return folder


def truncate(path: Path, keep_fraction: float = 0.5) -> Path:
    """Cut a file short, as an interrupted copy would."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path
