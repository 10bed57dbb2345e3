"""TorchIO preprocessing, its cache, the patch queue and region targets, on real NIfTI files."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from data_loaders.layouts import MODALITIES, find_subject
from data_loaders.pipelines import (
    LABEL_KEY,
    PreprocessingSettings,
    model_input,
    patch_batches,
    patch_queue,
    preprocess_subject,
    region_target,
)
from fedtumor.core.errors import DataError

SHAPE = (20, 24, 22)
SPACING = 2.0
# LPS-oriented input: ToCanonical must turn it into RAS.
LPS_AFFINE = np.diag([-SPACING, -SPACING, SPACING, 1.0])


def brain_with_tumour(et_label: int = 4) -> tuple[np.ndarray, np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"))
    centre = np.array(SHAPE)[:, None, None, None] / 2
    radius = np.sqrt((((grid - centre) / (np.array(SHAPE)[:, None, None, None] * 0.4)) ** 2).sum(0))
    brain = radius < 1.0
    tumour_distance = np.sqrt(((grid - (centre + 2)) ** 2).sum(0))
    label = np.zeros(SHAPE, np.uint8)
    label[(tumour_distance < 5) & brain] = 2
    label[tumour_distance < 3] = et_label
    label[tumour_distance < 1.5] = 1
    return brain, label


def write_subject(root: Path, subject_id: str, layout: str = "brats2021", seed: int = 0) -> Path:
    names = {
        "brats2021": ("_", ["t1", "t1ce", "t2", "flair", "seg"]),
        "brats2023": ("-", ["t1n", "t1c", "t2w", "t2f", "seg"]),
    }[layout]
    separator, suffixes = names
    brain, label = brain_with_tumour(et_label=3 if layout == "brats2023" else 4)
    rng = np.random.default_rng(seed)
    folder = root / subject_id
    folder.mkdir(parents=True)
    for index, suffix in enumerate(suffixes[:4]):
        image = np.where(brain, rng.normal(200 + 50 * index, 20, SHAPE) + 80 * (label > 0), 0).astype(np.float32)
        nib.save(nib.Nifti1Image(image, LPS_AFFINE), folder / f"{subject_id}{separator}{suffix}.nii.gz")
    nib.save(nib.Nifti1Image(label, LPS_AFFINE), folder / f"{subject_id}{separator}seg.nii.gz")
    return folder


@pytest.fixture()
def settings() -> PreprocessingSettings:
    return PreprocessingSettings(spacing_mm=3.0, min_shape=4)


def test_preprocessing_is_canonical_resampled_normalised_and_cropped(tmp_path, settings):
    files = find_subject(write_subject(tmp_path, "S1"))
    subject = preprocess_subject(files, settings, cache_dir=None)
    image = subject[MODALITIES[0]]
    assert image.orientation == ("R", "A", "S")
    assert image.spacing == pytest.approx((3.0, 3.0, 3.0))
    # Cropped to the brain (80% of the field of view per axis), not just resampled.
    resampled = [int(np.ceil(n * SPACING / 3.0)) for n in SHAPE]
    assert all(size < full for size, full in zip(image.spatial_shape, resampled))
    brain = subject["brain"].data.bool()
    for name in MODALITIES:
        inside = subject[name].data[brain]
        assert inside.mean().item() == pytest.approx(0.0, abs=1e-3)
        assert inside.std().item() == pytest.approx(1.0, abs=0.05)
        assert subject[name].data[~brain].abs().max().item() == 0.0


def test_min_shape_pads_small_volumes(tmp_path):
    files = find_subject(write_subject(tmp_path, "S1"))
    subject = preprocess_subject(files, PreprocessingSettings(spacing_mm=3.0, min_shape=32), cache_dir=None)
    assert subject.spatial_shape == (32, 32, 32)


def test_brats2023_labels_become_brats2021(tmp_path, settings):
    subject = preprocess_subject(find_subject(write_subject(tmp_path, "S23", layout="brats2023")), settings, None)
    assert set(subject[LABEL_KEY].data.unique().tolist()) == {0, 1, 2, 4}


def test_cache_is_reused_and_keyed_by_settings(tmp_path, settings):
    files = find_subject(write_subject(tmp_path / "data", "S1"))
    cache = tmp_path / "cache"
    first = preprocess_subject(files, settings, cache)
    cached_files = list(cache.glob("*.pt"))
    assert len(cached_files) == 1
    mtime = cached_files[0].stat().st_mtime_ns
    second = preprocess_subject(files, settings, cache)
    assert cached_files[0].stat().st_mtime_ns == mtime
    assert torch.equal(model_input(first), model_input(second))
    assert torch.equal(first[LABEL_KEY].data, second[LABEL_KEY].data)
    preprocess_subject(files, PreprocessingSettings(spacing_mm=2.0, min_shape=4), cache)
    assert len(list(cache.glob("*.pt"))) == 2


def test_torn_cache_file_is_rebuilt(tmp_path, settings):
    files = find_subject(write_subject(tmp_path / "data", "S1"))
    cache = tmp_path / "cache"
    reference = preprocess_subject(files, settings, cache)
    cached = next(cache.glob("*.pt"))
    cached.write_bytes(cached.read_bytes()[:100])
    rebuilt = preprocess_subject(files, settings, cache)
    assert torch.equal(model_input(rebuilt), model_input(reference))


def test_region_targets_are_nested_and_match_labels(tmp_path, settings):
    subject = preprocess_subject(find_subject(write_subject(tmp_path, "S1")), settings, None)
    et, tc, wt = region_target(subject).bool()
    label = subject[LABEL_KEY].data[0]
    assert torch.equal(et, label == 4)
    assert torch.equal(tc, (label == 4) | (label == 1))
    assert torch.equal(wt, label > 0)
    assert bool((et <= tc).all() and (tc <= wt).all()) and et.any()


def test_patch_queue_yields_batches_of_patches(tmp_path):
    settings = PreprocessingSettings(spacing_mm=3.0, min_shape=16)  # volumes at least one patch
    subjects = [
        preprocess_subject(find_subject(write_subject(tmp_path, f"S{i}", seed=i)), settings, None) for i in range(2)
    ]
    queue = patch_queue(subjects, patch_size=16, samples_per_volume=3, queue_length=6, augment=True)
    batches = list(patch_batches(queue, batch_size=2))
    assert sum(inputs.shape[0] for inputs, _ in batches) == 6
    inputs, targets = batches[0]
    assert inputs.shape == (2, 4, 16, 16, 16) and inputs.dtype == torch.float32
    assert targets.shape == (2, 3, 16, 16, 16)
    assert set(targets.unique().tolist()) <= {0.0, 1.0}


def test_corrupt_file_is_named(tmp_path, settings):
    folder = write_subject(tmp_path, "S1")
    flair = folder / "S1_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[:200])
    with pytest.raises(DataError, match=r"S1.*S1_flair\.nii\.gz"):
        preprocess_subject(find_subject(folder), settings, None)
