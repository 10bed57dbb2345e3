"""Prediction on the real BraTS case: input grid, brain mask, label convention, no segmentation read.

The checkpoints are tiny untrained U-Nets saved here (4 base filters, 32^3 patches, 2 mm, so a
240x240x155 case takes seconds): one seeded, whose labels vary with the image, and one whose
last layer is constant and large, so every voxel the network sees is enhancing tumour. Only
masking can then keep labels off the background around the brain.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from data_loaders.inference import Predictor, predict_subject_file, to_convention
from data_loaders.layouts import find_subject
from data_loaders.pipelines import LABEL_KEY, raw_subject
from data_loaders.prediction_profile import NetworkSpec, PredictionProfile, best_of, profile_prediction
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import DataError
from fedtumor.core.model import build_model
from fedtumor.core.regions import labels_to_regions
from fedtumor.run.checkpoint import save_checkpoint
from tests.nifti_factory import write_subject

TINY = RunConfig(model="unet", base_filters=4, patch_size=32, spacing_mm=2.0)


def save_tiny_checkpoint(path: Path, every_voxel_tumour: bool = False, seed: int = 0) -> Path:
    """An untrained tiny U-Net; ``every_voxel_tumour`` makes its output a constant +50 logit per region."""
    torch.manual_seed(seed)
    model = build_model(TINY.model, TINY.base_filters)
    if every_voxel_tumour:
        last_norm, last_conv = model.model[-1][0].adn.N, model.model[-1][1].conv.unit0.conv
        with torch.no_grad():  # the last block's input becomes 0 and its conv a constant
            last_norm.weight.zero_(), last_norm.bias.zero_()
            last_conv.weight.zero_(), last_conv.bias.fill_(50.0)
    return save_checkpoint(path, model.state_dict(), TINY)


def brain_of(folder: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Any-modality-non-zero mask read with nibabel (independent of TorchIO), and the T1 image."""
    scans = sorted(p for p in folder.iterdir() if "seg" not in p.name)
    t1 = nib.load(next(p for p in scans if p.name.endswith(("-t1n.nii.gz", "_t1.nii.gz"))))
    brain = np.zeros(t1.shape, bool)
    for path in scans:
        brain |= np.asarray(nib.load(path).dataobj) != 0
    return brain, t1


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "seeded": save_tiny_checkpoint(root / "seeded.pt"),
        "all_tumour": save_tiny_checkpoint(root / "all_tumour.pt", every_voxel_tumour=True),
    }


@pytest.fixture(scope="module")
def seeded_predictions(checkpoints, real_case_2023, real_case_2021) -> dict[str, nib.Nifti1Image]:
    """The seeded model on both layouts, by default and with the 2021 convention forced on 2023."""
    predictor = Predictor.load(checkpoints["seeded"], device="cpu")
    return {
        "2023": predictor.segment(find_subject(real_case_2023)).image,
        "2021": predictor.segment(find_subject(real_case_2021)).image,
        "2023_as_2021": predictor.segment(find_subject(real_case_2023), labels="brats2021").image,
    }


def voxels(image: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(image.dataobj)


def test_prediction_is_on_the_input_grid_and_masked_to_the_brain(checkpoints, real_case_2023, tmp_path):
    out = predict_subject_file(checkpoints["all_tumour"], real_case_2023, tmp_path / "pred.nii.gz", device="cpu")
    written = nib.load(out)
    brain, t1 = brain_of(real_case_2023)
    assert written.shape == t1.shape == (240, 240, 155)
    assert np.allclose(written.affine, t1.affine)
    assert written.get_data_dtype() == np.uint8
    labels = voxels(written)
    assert set(np.unique(labels).tolist()) == {0, 3}  # BraTS 2023 input: ET written as 3
    # Every voxel the network saw is tumour: the labels must be the brain, nothing outside it,
    # all of it but a few edge voxels whose 2 mm voxel fell outside the crop to the brain.
    assert not labels[~brain].any()
    assert (labels[brain] != 0).mean() > 0.999
    assert 0 < brain.mean() < 0.5  # a skull-stripped head: most of the box is background


def test_both_layouts_give_the_same_regions_and_the_forced_convention_the_same_bytes(seeded_predictions):
    in_2023, in_2021 = voxels(seeded_predictions["2023"]), voxels(seeded_predictions["2021"])
    assert {1, 2, 3} & set(np.unique(in_2023).tolist()), "the seeded model predicts no tumour: test is void"
    assert not {4} & set(np.unique(in_2023).tolist()) and not {3} & set(np.unique(in_2021).tolist())
    assert np.array_equal(labels_to_regions(in_2023, "brats2023"), labels_to_regions(in_2021, "brats2021"))
    forced = seeded_predictions["2023_as_2021"]
    assert voxels(forced).tobytes() == in_2021.tobytes()
    assert np.allclose(forced.affine, seeded_predictions["2021"].affine)


def test_seeded_prediction_stays_inside_the_brain(seeded_predictions, real_case_2021):
    brain, _ = brain_of(real_case_2021)
    labels = voxels(seeded_predictions["2021"])
    assert labels[~brain].max() == 0 and labels[brain].max() > 0


def test_a_broken_segmentation_does_not_stop_prediction(checkpoints, real_case_2023, seeded_predictions, tmp_path):
    case = tmp_path / real_case_2023.name
    shutil.copytree(real_case_2023, case, copy_function=shutil.copyfile)  # copyfile: writable copies
    seg = next(case.glob("*-seg.nii.gz"))
    seg.write_bytes(b"not a NIfTI header")
    files = find_subject(case)
    with pytest.raises(DataError, match="seg"):
        raw_subject(files)  # training still refuses it
    assert LABEL_KEY not in raw_subject(files, with_label=False)
    predicted = Predictor.load(checkpoints["seeded"], device="cpu").segment(files)
    assert predicted.warnings == ()  # a skull-stripped BraTS case
    assert voxels(predicted.image).tobytes() == voxels(seeded_predictions["2023"]).tobytes()


def test_a_missing_modality_is_one_data_error_naming_the_file(checkpoints, tmp_path):
    folder = write_subject(tmp_path, "S1", shape=(16, 16, 16), modalities=("t1", "t1ce", "t2"))
    with pytest.raises(DataError, match=r"S1_flair\.nii\.gz"):
        Predictor.load(checkpoints["seeded"], device="cpu").segment(find_subject(folder))


def test_labels_convert_between_conventions():
    labels_2021 = np.array([[0, 1], [2, 4]], np.uint8)
    assert to_convention(labels_2021, "brats2021").tolist() == [[0, 1], [2, 4]]
    assert to_convention(labels_2021, "brats2023").tolist() == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="brats2019"):
        to_convention(labels_2021, "brats2019")


def test_the_profile_measures_one_prediction(tmp_path):
    folder = write_subject(tmp_path, "S1", shape=(24, 24, 20))
    profile = profile_prediction(folder, NetworkSpec("unet", 4, 32, spacing_mm=2.0), device="cpu")
    assert profile.input_shape == (24, 24, 20) and profile.device == "cpu" and profile.cuda_peak_mb is None
    assert profile.predict_seconds > 0 and profile.cpu_seconds > 0 and profile.load_seconds > 0
    assert 0 < profile.rss_before_mb <= profile.peak_rss_mb
    assert profile.as_record()["network"]["model"] == "unet"


def test_repeats_keep_the_shortest_time_and_the_largest_memory():
    network = NetworkSpec("unet", 4, 32)
    runs = [
        PredictionProfile(network, "cpu", 2, 1.0, seconds, seconds * 2, 400.0, peak, None, (8, 8, 8), 0)
        for seconds, peak in [(5.0, 700.0), (3.0, 650.0), (4.0, 720.0)]
    ]
    best = best_of(runs)
    assert (best.predict_seconds, best.cpu_seconds, best.peak_rss_mb) == (3.0, 6.0, 720.0)
    with pytest.raises(ValueError, match="same network"):
        best_of([runs[0], PredictionProfile(**{**runs[1].as_record(), "network": NetworkSpec("unet", 8, 32)})])
