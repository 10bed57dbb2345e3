"""Segment new subjects with a trained global model; each segmentation lands on its input's grid.

The network sees the preprocessed volume (canonical, resampled to the checkpoint's spacing,
z-scored in the brain, cropped to the brain, padded); its labels are resampled back to the
input T1's grid by nearest neighbour, masked to the input's brain (voxels where any modality is
non-zero) and written in the input layout's label convention (ET = 4 for BraTS 2021 / FeTS,
3 for BraTS 2023) unless another one is asked for. No segmentation file is ever opened.

A scan that does not look skull-stripped (``onboarding``) is still segmented, with a warning:
its "brain" is the whole head, so the mask cannot keep tumour off the skull and background.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torchio as tio

from data_loaders.layouts import MODALITIES, SubjectFiles, find_subject
from data_loaders.onboarding import skull_strip_warning
from data_loaders.pipelines import (
    BRAIN_KEY,
    AddBrainMask,
    PreprocessingSettings,
    model_input,
    preprocessing_transform,
    raw_subject,
)
from fedtumor.core.errors import DataError
from fedtumor.core.regions import BRATS2021_LABELS, CONVENTIONS
from fedtumor.core.training import predict_labels, resolve_device
from fedtumor.run.checkpoint import load_checkpoint

PREDICTION_KEY = "prediction"
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def to_convention(labels: np.ndarray, convention: str) -> np.ndarray:
    """BraTS 2021 labels (0, 1, 2, 4) rewritten in ``convention``'s values, as uint8.

    Example:
        >>> to_convention(np.array([0, 1, 2, 4]), "brats2023").tolist()
        [0, 1, 2, 3]
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown label convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
    table = np.zeros(max(BRATS2021_LABELS.values()) + 1, dtype=np.uint8)
    for name, value in BRATS2021_LABELS.items():
        table[value] = CONVENTIONS[convention][name]
    return table[labels]


@dataclass(frozen=True)
class Segmentation:
    """A written-ready segmentation and what the reader should know about it (one line each)."""

    image: nib.Nifti1Image
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Predictor:
    """A checkpoint's network with the preprocessing it was trained with; load it once per folder.

    Example:
        >>> predictor = Predictor.load(Path("outputs/my-run"), device="cpu")
        >>> segmentation = predictor.segment(find_subject(Path("BraTS-GLI-00001-000")))
        >>> nib.save(segmentation.image, "BraTS-GLI-00001-000.nii.gz")
    """

    model: torch.nn.Module
    settings: PreprocessingSettings
    patch_size: int
    device: torch.device

    @classmethod
    def load(cls, model_path: Path, device: str = "auto") -> Predictor:
        """From a run folder (its final model) or a ``.pt`` checkpoint; DataError when it is not one."""
        model, meta = load_checkpoint(Path(model_path))
        settings = PreprocessingSettings(spacing_mm=meta["spacing_mm"], min_shape=meta["patch_size"])
        return cls(model.eval(), settings, int(meta["patch_size"]), resolve_device(device))

    def segment(self, files: SubjectFiles, labels: str | None = None) -> Segmentation:
        """The subject's segmentation on its T1's grid, affine and header, masked to its brain.

        ``labels`` forces a convention ("brats2021" or "brats2023"); by default the input's layout.
        Raises DataError naming the file for a missing, corrupt or inconsistent image.
        """
        convention = labels or files.layout
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown label convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
        subject = raw_subject(files, with_label=False)  # validates the four images only
        reference_path = files.images[MODALITIES[0]]
        try:
            brain, grid = _input_brain_and_grid(subject)
            image, processed_affine = self._network_input(subject)
        except Exception as exc:  # a transform failing on odd voxels is this case's problem, not the folder's
            raise DataError(f"preprocessing failed: {exc}", subject=files.subject_id, path=files.folder) from exc
        del subject  # the four raw volumes are not needed past here
        header = nib.load(str(reference_path)).header.copy()  # the header only: the voxels stay on disk
        warning = skull_strip_warning(brain, header.get_zooms()[:3])
        warnings = (str(DataError(warning, subject=files.subject_id, path=reference_path)),) if warning else ()

        processed_labels = predict_labels(self.model, image, self.patch_size, self.device)
        del image
        on_input_grid = _resample_labels(processed_labels, processed_affine, grid)
        on_input_grid[~brain] = 0
        output = nib.Nifti1Image(to_convention(on_input_grid, convention), header.get_best_affine(), header)
        output.set_data_dtype(np.uint8)
        output.header.set_slope_inter(1, 0)  # the T1's intensity scaling must not rescale labels
        return Segmentation(output, warnings)

    def _network_input(self, subject: tio.Subject) -> tuple[torch.Tensor, np.ndarray]:
        """(4, X, Y, Z) preprocessed input and its affine; transforms work in place to save copies."""
        transform = preprocessing_transform(self.settings)  # no label, so no label remapping
        for step in [transform, *transform.transforms]:
            step.copy = False  # each TorchIO step deep-copies by default: 4 volumes more at the peak
        processed = transform(subject)
        return model_input(processed), processed[MODALITIES[0]].affine


def _input_brain_and_grid(subject: tio.Subject) -> tuple[np.ndarray, tuple[tuple[int, ...], np.ndarray]]:
    """Brain mask on the input grid (training's definition) and that grid as (shape, affine)."""
    brain = AddBrainMask(copy=False)(subject)[BRAIN_KEY].data[0].numpy().astype(bool)
    reference = subject[MODALITIES[0]]
    return brain, (tuple(reference.spatial_shape), reference.affine.copy())


def _resample_labels(labels: np.ndarray, affine: np.ndarray, grid: tuple[tuple[int, ...], np.ndarray]) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume onto ``grid`` (voxels outside it become 0)."""
    prediction = tio.LabelMap(tensor=torch.from_numpy(labels[None].astype(np.int16)), affine=affine)
    resampled = tio.Resample(grid)(tio.Subject({PREDICTION_KEY: prediction}))[PREDICTION_KEY]
    return resampled.data[0].numpy().astype(np.uint8)


def write_segmentation(image: nib.Nifti1Image, out_path: Path) -> Path:
    """Write under a temporary name, then rename: an interrupted run leaves no half file."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = next(s for s in NIFTI_SUFFIXES if out_path.name.endswith(s))
    tmp = out_path.with_name(f".{out_path.name[: -len(suffix)]}.partial{suffix}")
    nib.save(image, str(tmp))
    tmp.replace(out_path)
    return out_path


def is_nifti_path(path: Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def output_path(out_dir: Path, subject_id: str) -> Path:
    """``OUT_DIR/<ID>.nii.gz``: one file per subject, as nnU-Net writes and ``fedtumor evaluate`` reads."""
    return Path(out_dir) / f"{subject_id}.nii.gz"


@dataclass(frozen=True)
class CaseResult:
    """What happened to one subject: written, skipped (output exists) or failed (one-line error)."""

    subject_id: str
    output: Path
    seconds: float
    error: str | None = None
    skipped: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def predict_cases(
    predictor: Predictor,
    subjects: Iterable[SubjectFiles],
    out_paths: Iterable[Path],
    labels: str | None = None,
    overwrite: bool = False,
) -> Iterator[CaseResult]:
    """Segment each subject to its output path; a bad case yields its error and the next one runs.

    An existing output is skipped (so an interrupted folder resumes) unless ``overwrite``.

    Example:
        >>> subjects = discover_subjects(Path("new_cases"))
        >>> outs = [output_path(Path("predictions"), s.subject_id) for s in subjects]
        >>> failed = [r for r in predict_cases(predictor, subjects, outs) if not r.ok]
    """
    for files, out in zip(subjects, out_paths, strict=True):
        start = time.perf_counter()
        if out.exists() and not overwrite:
            yield CaseResult(files.subject_id, out, 0.0, skipped=True)
            continue
        try:
            segmentation = predictor.segment(files, labels)
            write_segmentation(segmentation.image, out)
        except DataError as exc:
            yield CaseResult(files.subject_id, out, time.perf_counter() - start, error=" ".join(str(exc).split()))
        except OSError as exc:  # a full disk or an unwritable folder, named by its path
            message = f"cannot write {out}: {exc.strerror or exc}"
            yield CaseResult(files.subject_id, out, time.perf_counter() - start, error=message)
        else:
            yield CaseResult(files.subject_id, out, time.perf_counter() - start, warnings=segmentation.warnings)


def predict_subject_file(
    model_path: Path, subject_dir: Path, out_path: Path, device: str = "auto", labels: str | None = None
) -> Path:
    """One subject folder -> one segmentation file (overwritten if present).

    Example:
        >>> predict_subject_file(Path("outputs/my-run"), Path("BraTS-GLI-00001-000"), Path("pred.nii.gz"))
    """
    if not is_nifti_path(out_path):
        raise DataError("output must end in .nii.gz or .nii", path=out_path)
    predictor = Predictor.load(model_path, device)
    return write_segmentation(predictor.segment(find_subject(subject_dir), labels).image, out_path)
