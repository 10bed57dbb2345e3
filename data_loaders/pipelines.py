"""TorchIO pipelines: preprocessing (cached), augmentation, the patch queue, model inputs.

Preprocessing follows the BraTS recipe: canonical orientation, resampling to isotropic
``spacing_mm``, z-score inside the brain mask, crop to the brain, then pad to at least one
patch. Each subject's preprocessed tensors are cached on disk, keyed by its files and the
settings, so an epoch (or a round) never re-reads and re-resamples the NIfTI files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torchio as tio

from data_loaders.layouts import MODALITIES, SubjectFiles
from data_loaders.validation import validate_or_raise
from fedtumor.core.errors import DataError
from fedtumor.core.regions import BRATS2021_LABELS

CACHE_VERSION = 1
LABEL_KEY = "label"
BRAIN_KEY = "brain"


@dataclass(frozen=True)
class PreprocessingSettings:
    spacing_mm: float = 1.0
    min_shape: int = 64  # pad volumes smaller than one training patch

    def __post_init__(self) -> None:
        if self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if self.min_shape < 1:
            raise ValueError(f"min_shape must be >= 1, got {self.min_shape}")


class AddBrainMask(tio.Transform):
    """Add a ``brain`` label map: voxels where any modality is non-zero (BraTS is skull-stripped)."""

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        first = subject[MODALITIES[0]]
        mask = torch.zeros_like(first.data, dtype=torch.bool)
        for name in MODALITIES:
            mask |= subject[name].data != 0
        subject.add_image(tio.LabelMap(tensor=mask.to(torch.uint8), affine=first.affine), BRAIN_KEY)
        return subject


class PadToMinimumShape(tio.Transform):
    """Pad (never crop) each spatial axis to at least ``min_shape`` voxels, centred."""

    def __init__(self, min_shape: int, **kwargs):
        super().__init__(**kwargs)
        if min_shape < 1:
            raise ValueError(f"min_shape must be >= 1, got {min_shape}")
        self.min_shape = min_shape
        self.args_names = ["min_shape"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        deficit = [max(0, self.min_shape - size) for size in subject.spatial_shape]
        if not any(deficit):
            return subject
        padding = []
        for missing in deficit:
            padding += [missing // 2, missing - missing // 2]
        return tio.Pad(padding)(subject)


def preprocessing_transform(settings: PreprocessingSettings, convention: str = "brats2021") -> tio.Compose:
    """Raw subject -> canonical, isotropic, brain-normalised, brain-cropped, BraTS 2021 labels."""
    steps: list[tio.Transform] = [AddBrainMask(), tio.ToCanonical(), tio.Resample(settings.spacing_mm)]
    steps += [
        tio.ZNormalization(masking_method=BRAIN_KEY),
        tio.Mask(masking_method=BRAIN_KEY),  # background back to 0 after z-scoring
        tio.CropOrPad(mask_name=BRAIN_KEY),  # no target shape: crop to the brain's bounding box
        PadToMinimumShape(settings.min_shape),
    ]
    if convention == "brats2023":
        steps.insert(0, tio.RemapLabels({3: BRATS2021_LABELS["ET"]}, include=[LABEL_KEY]))
    return tio.Compose(steps)


def augmentation_transform() -> tio.Compose:
    """Cheap spatial + intensity augmentation for training on CPU."""
    return tio.Compose(
        [
            tio.RandomFlip(axes=("LR",)),
            tio.RandomAffine(scales=(0.9, 1.1), degrees=10, p=0.25),
            tio.RandomNoise(std=(0, 0.1), p=0.2, exclude=[LABEL_KEY, BRAIN_KEY]),
        ]
    )


def raw_subject(files: SubjectFiles, require_label: bool = True, with_label: bool = True) -> tio.Subject:
    """A TorchIO subject over the NIfTI files, after validating them (DataError names the file).

    ``with_label=False`` gives the four images only: the segmentation, even when present, is
    neither validated nor opened (prediction needs none, and a bad one must not block it).

    Example:
        >>> subject = raw_subject(find_subject(Path("BraTS-GLI-00001-000")), with_label=False)
    """
    if not with_label:
        files = replace(files, label=None)
    validate_or_raise(files, require_label=require_label and with_label)
    images = {name: tio.ScalarImage(files.images[name]) for name in MODALITIES}
    if files.label is not None:
        images[LABEL_KEY] = tio.LabelMap(files.label)
    return tio.Subject(images, subject_id=files.subject_id)


def _cache_key(files: SubjectFiles, settings: PreprocessingSettings) -> str:
    paths = [files.images[name] for name in MODALITIES] + ([files.label] if files.label else [])
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    blob = json.dumps({"files": stamp, "settings": asdict(settings), "version": CACHE_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _subject_from_tensors(payload: dict) -> tio.Subject:
    affine = payload["affine"].numpy()
    images: dict[str, tio.Image] = {name: tio.ScalarImage(tensor=payload[name], affine=affine) for name in MODALITIES}
    images[BRAIN_KEY] = tio.LabelMap(tensor=payload[BRAIN_KEY], affine=affine)
    if LABEL_KEY in payload:
        images[LABEL_KEY] = tio.LabelMap(tensor=payload[LABEL_KEY], affine=affine)
    return tio.Subject(images, subject_id=payload["subject_id"])


def preprocess_subject(files: SubjectFiles, settings: PreprocessingSettings, cache_dir: Path | None) -> tio.Subject:
    """Preprocessed subject, from the cache when the files and settings are unchanged."""
    cache_path = cache_dir / f"{files.subject_id}-{_cache_key(files, settings)}.pt" if cache_dir else None
    if cache_path is not None and cache_path.exists():
        try:
            return _subject_from_tensors(torch.load(cache_path, weights_only=True))
        except Exception:  # a torn cache file is rebuilt, never trusted
            cache_path.unlink(missing_ok=True)
    subject = raw_subject(files)
    try:
        processed = preprocessing_transform(settings, files.layout)(subject)
    except Exception as exc:
        raise DataError(f"preprocessing failed: {exc}", subject=files.subject_id, path=files.folder) from exc
    if cache_path is not None:
        payload = {name: processed[name].data.to(torch.float32) for name in MODALITIES}
        payload[BRAIN_KEY] = processed[BRAIN_KEY].data.to(torch.uint8)
        if LABEL_KEY in processed:
            payload[LABEL_KEY] = processed[LABEL_KEY].data.to(torch.uint8)
        payload["affine"] = torch.as_tensor(processed[MODALITIES[0]].affine)
        payload["subject_id"] = files.subject_id
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(cache_path)  # atomic: parallel sites never read half a file
        return _subject_from_tensors(payload)
    return processed


def model_input(subject_or_batch: dict) -> torch.Tensor:
    """Stack the four modalities on the channel axis: (4, X, Y, Z) or (B, 4, X, Y, Z)."""
    return torch.cat([subject_or_batch[name][tio.DATA] for name in MODALITIES], dim=-4).float()


def region_target(subject_or_batch: dict) -> torch.Tensor:
    """ET, TC, WT channels from the (BraTS 2021) label map, cast after augmentation."""
    label = subject_or_batch[LABEL_KEY][tio.DATA].long().squeeze(-4)
    et = label == BRATS2021_LABELS["ET"]
    tc = et | (label == BRATS2021_LABELS["NCR"])
    wt = tc | (label == BRATS2021_LABELS["ED"])
    return torch.stack([et, tc, wt], dim=-4).float()


def subject_spacing(subject: tio.Subject) -> tuple[float, float, float]:
    return tuple(float(s) for s in subject[MODALITIES[0]].spacing)


def patch_queue(
    subjects: Sequence[tio.Subject],
    patch_size: int,
    samples_per_volume: int,
    queue_length: int,
    augment: bool,
) -> tio.Queue:
    """Training patches, half of them centred on tumour, from a TorchIO queue (no workers on 2 cores)."""
    dataset = tio.SubjectsDataset(list(subjects), transform=augmentation_transform() if augment else None)
    labels = BRATS2021_LABELS
    sampler = tio.LabelSampler(
        patch_size,
        label_name=LABEL_KEY,
        label_probabilities={0: 0.5, labels["NCR"]: 1 / 6, labels["ED"]: 1 / 6, labels["ET"]: 1 / 6},
    )
    return tio.Queue(
        dataset,
        max_length=max(queue_length, samples_per_volume),
        samples_per_volume=samples_per_volume,
        sampler=sampler,
        num_workers=0,
        shuffle_subjects=True,
        shuffle_patches=True,
    )


def patch_batches(queue: tio.Queue, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (input, region target) batches from a patch queue."""
    loader = tio.SubjectsLoader(queue, batch_size=batch_size, num_workers=0)
    for batch in loader:
        yield model_input(batch), region_target(batch)


def regions_array(subject: tio.Subject) -> np.ndarray:
    """Reference regions (3, X, Y, Z) as booleans for scoring."""
    return region_target(subject).numpy().astype(bool)
