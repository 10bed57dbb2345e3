"""Tests for fedtumor.core.metrics; every expected value is derived by hand in the comments."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from fedtumor.core.errors import DataError
from fedtumor.core.metrics import (
    HD95_EMPTY_PENALTY,
    dice,
    hd95,
    region_scores,
    score_files,
    score_label_maps,
    sensitivity,
    specificity,
)
from fedtumor.core.regions import labels_to_regions

# ------------------------------------------------------------------ helpers


def mask(shape, *voxels):
    out = np.zeros(shape, dtype=bool)
    for voxel in voxels:
        out[voxel] = True
    return out


def line_labels(values):
    """A label map of shape (len(values), 1, 1): a 1-voxel-thick line along axis 0."""
    return np.asarray(values, dtype=np.int16).reshape(-1, 1, 1)


def brute_force_hd95(pred, ref, spacing):
    """Independent HD95: surfaces by explicit 6-neighbour test, all pairwise distances."""

    def surface_points(m):
        padded = np.pad(m, 1, constant_values=False)  # outside the array is background
        interior = padded[1:-1, 1:-1, 1:-1].copy()
        for axis in range(3):
            for step in (-1, 1):
                interior &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~interior) * np.asarray(spacing)

    distances = cdist(surface_points(pred), surface_points(ref))
    pooled = np.concatenate([distances.min(axis=1), distances.min(axis=0)])
    return float(np.percentile(pooled, 95))


# ------------------------------------------------------------------ dice, sensitivity, specificity


def test_dice_known_overlap():
    # Two 2x2x2 cubes (8 voxels each) at x=0..1 and x=1..2 share the x=1 slab of 2x2 = 4
    # voxels -> Dice = 2*4 / (8+8) = 0.5.
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[0:2, 0:2, 0:2] = True
    b[1:3, 0:2, 0:2] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_dice_empty_conventions():
    empty = np.zeros((3, 3, 3), bool)
    one = mask((3, 3, 3), (1, 1, 1))
    assert dice(empty, empty) == 1.0
    assert dice(one, empty) == 0.0
    assert dice(empty, one) == 0.0


def test_sensitivity_specificity_hand_computed():
    # Volume 4x4x4 = 64 voxels. ref: 8 voxels (x=0..1, y=0..1, z=0..1).
    # pred: 6 voxels, 4 inside ref (x=1) and 2 outside (x=2, z=0..1 at y=0).
    # TP=4, FN=4, FP=2, TN=64-4-4-2=54 -> sensitivity 4/8, specificity 54/(54+2).
    ref = np.zeros((4, 4, 4), bool)
    ref[0:2, 0:2, 0:2] = True
    pred = np.zeros_like(ref)
    pred[1, 0:2, 0:2] = True
    pred[2, 0, 0:2] = True
    assert pred.sum() == 6 and (pred & ref).sum() == 4
    assert sensitivity(pred, ref) == pytest.approx(0.5)
    assert specificity(pred, ref) == pytest.approx(54 / 56)


def test_sensitivity_specificity_edge_conventions():
    empty = np.zeros((2, 2, 2), bool)
    full = np.ones((2, 2, 2), bool)
    one = mask((2, 2, 2), (0, 0, 0))
    # Empty reference: nothing to find; a false alarm scores 0 (the Dice convention).
    assert sensitivity(empty, empty) == 1.0
    assert sensitivity(one, empty) == 0.0
    # Specificity over the whole volume: 1 FP among 8 negatives -> 7/8.
    assert specificity(one, empty) == pytest.approx(7 / 8)
    # No reference negatives: nothing can be a false positive.
    assert specificity(full, full) == 1.0
    assert specificity(empty, full) == 1.0


# ------------------------------------------------------------------ hd95


def test_hd95_single_voxels_isotropic():
    # Single voxels are their own surface; the distance is 3 voxels = 3 mm each way.
    a = mask((8, 8, 8), (1, 2, 2))
    b = mask((8, 8, 8), (4, 2, 2))
    assert hd95(a, b, (1, 1, 1)) == pytest.approx(3.0)
    assert hd95(a, b) == pytest.approx(3.0)  # default spacing is 1 mm


@pytest.mark.parametrize(
    "axis, expected",
    [(0, 3 * 1.0), (1, 3 * 2.0), (2, 3 * 3.5)],  # 3 voxels times that axis' spacing
)
def test_hd95_single_voxels_anisotropic(axis, expected):
    start = [1, 1, 1]
    end = list(start)
    end[axis] += 3
    a = mask((6, 6, 6), tuple(start))
    b = mask((6, 6, 6), tuple(end))
    assert hd95(a, b, (1, 2, 3.5)) == pytest.approx(expected)


def test_hd95_anisotropic_spacing_changes_diagonal_result():
    # Offset (3, 3, 3) voxels: isotropic sqrt(27) mm; with (1, 2, 3.5) mm voxels
    # sqrt(3^2 + 6^2 + 10.5^2) = sqrt(155.25) mm.
    a = mask((6, 6, 6), (1, 1, 1))
    b = mask((6, 6, 6), (4, 4, 4))
    assert hd95(a, b, (1, 1, 1)) == pytest.approx(math.sqrt(27))
    assert hd95(a, b, (1, 2, 3.5)) == pytest.approx(math.sqrt(155.25))


def test_hd95_identical_masks_is_zero():
    a = np.zeros((7, 7, 7), bool)
    a[2:5, 1:6, 3:5] = True
    assert hd95(a, a, (1, 2, 3.5)) == 0.0


def cube(start_x):
    m = np.zeros((8, 6, 6), bool)
    m[start_x : start_x + 3, 1:4, 1:4] = True
    return m


def test_hd95_cube_vs_shifted_cube():
    # 3x3x3 cubes: the surface is all 26 voxels but the centre.
    # A at x=1..3, B at x=3..5 (shift 2). d(A->B): A's x=1 face (9 voxels) is 2 from B's
    # x=3 face; A's x=2 ring (8) is 1 from B's x=3 face; A's x=3 face (9) lies on B's face: 0.
    # By symmetry d(B->A) is the same. Pooled: 18 zeros, 16 ones, 18 twos (52 values);
    # the 95th percentile sits at rank 0.95*51 = 48.45, among the twos -> 2.0 voxels.
    assert hd95(cube(1), cube(3), (1, 1, 1)) == pytest.approx(2.0)
    # Same geometry with 0.5 mm along x: every distance is along x, so 1.0 mm.
    assert hd95(cube(1), cube(3), (0.5, 1, 1)) == pytest.approx(1.0)
    # Shift 1: A's x=1 face is 1 from B's x=2 face, A's centre-of-x=3-face is 1 from B's
    # x=2/x=4 faces, the rest 0: 10 ones + 16 zeros per direction -> rank 48.45 is a one.
    assert hd95(cube(1), cube(2), (1, 1, 1)) == pytest.approx(1.0)


def test_hd95_pools_both_directions_like_medpy():
    # A is one voxel at x=0; B a line x=0..10 (a 1-voxel line is all surface).
    # d(A->B) = [0]; d(B->A) = [0, 1, ..., 10].
    # Pooled (MedPy/BraTS 2021): 12 values [0, 0, 1, ..., 10], rank 0.95*11 = 10.45 between
    # 9 and 10 -> 9.45. The max of directed p95s (MONAI) would be 9.5 (rank 9.5 of 0..10).
    a = mask((12, 3, 3), (0, 1, 1))
    b = np.zeros((12, 3, 3), bool)
    b[0:11, 1, 1] = True
    assert hd95(a, b) == pytest.approx(9.45)
    assert hd95(b, a) == pytest.approx(9.45)  # symmetric
    # 2 mm along the line doubles every distance.
    assert hd95(a, b, (2, 1, 1)) == pytest.approx(18.9)


def test_hd95_empty_conventions():
    empty = np.zeros((4, 4, 4), bool)
    one = mask((4, 4, 4), (1, 1, 1))
    assert hd95(empty, empty, (1, 1, 1)) == 0.0
    assert hd95(one, empty, (1, 1, 1)) == HD95_EMPTY_PENALTY == 373.1287
    assert hd95(empty, one, (1, 1, 1)) == 373.1287


def test_hd95_cropped_computation_matches_brute_force():
    # The bounding-box crop must not change the answer, including masks touching the edges.
    rng = np.random.default_rng(7)
    for trial in range(25):
        shape = (9, 8, 7)
        pred = rng.random(shape) < 0.15
        ref = np.zeros(shape, bool)
        x, y, z = rng.integers(0, 4, size=3)
        ref[x : x + 5, y : y + 4, z : z + 4] = True
        ref ^= rng.random(shape) < 0.05
        spacing = (1.0, 2.0, 3.5) if trial % 2 else (1.0, 1.0, 1.0)
        assert hd95(pred, ref, spacing) == pytest.approx(brute_force_hd95(pred, ref, spacing))
    # A small object in a corner of a big volume (the crop path proper).
    big_pred = np.zeros((40, 40, 30), bool)
    big_ref = np.zeros_like(big_pred)
    big_pred[0:3, 0:4, 0:2] = True
    big_ref[2:6, 1:3, 0:3] = True
    assert hd95(big_pred, big_ref, (1, 2, 3.5)) == pytest.approx(brute_force_hd95(big_pred, big_ref, (1, 2, 3.5)))


def test_hd95_rejects_bad_spacing_and_shapes():
    a = mask((3, 3, 3), (1, 1, 1))
    with pytest.raises(ValueError):
        hd95(a, a, (1, 1))
    with pytest.raises(ValueError):
        hd95(a, a, (1, 0, 1))
    with pytest.raises(ValueError):
        hd95(a, np.zeros((3, 3, 4), bool))


# ------------------------------------------------------------------ regions and label maps

# Lines along axis 0 with 2 mm voxels along it; index:   0  1  2  3  4  5  6  7
REF_LINE = [0, 2, 1, 4, 4, 2, 0, 0]
PRED_LINE = [0, 2, 2, 4, 1, 0, 0, 2]
LINE_SPACING = (2.0, 1.0, 1.0)
# ref : ET {3,4}      TC {2,3,4}   WT {1..5}       (1-voxel lines: every voxel is surface)
# pred: ET {3}        TC {3,4}     WT {1,2,3,4,7}
# ET: Dice 2*1/3; sens 1/2; spec: 6 negatives, no FP -> 1.
#     d(P->R)=[0], d(R->P)=[0,1] -> pooled [0,0,1], rank 1.9 -> 0.9 voxel = 1.8 mm.
# TC: Dice 2*2/5 = 0.8; sens 2/3; spec 1.
#     d(P->R)=[0,0], d(R->P)=[1,0,0] -> [0,0,0,0,1], rank 3.8 -> 0.8 voxel = 1.6 mm.
# WT: Dice 2*4/10 = 0.8; sens 4/5; spec: negatives {0,6,7}, FP {7} -> 2/3.
#     d(P->R)=[0,0,0,0,2] (7 is 2 from 5); d(R->P)=[0,0,0,0,1] (5 is 1 from 4)
#     -> 8 zeros, 1, 2; rank 0.95*9 = 8.55 -> 1.55 voxel = 3.1 mm.
EXPECTED_LINE_SCORES = {
    "ET": {"dice": 2 / 3, "hd95": 1.8, "sensitivity": 1 / 2, "specificity": 1.0},
    "TC": {"dice": 0.8, "hd95": 1.6, "sensitivity": 2 / 3, "specificity": 1.0},
    "WT": {"dice": 0.8, "hd95": 3.1, "sensitivity": 4 / 5, "specificity": 2 / 3},
}


def assert_scores_equal(actual, expected):
    assert list(actual) == ["ET", "TC", "WT"]
    for region, metrics in expected.items():
        assert list(actual[region]) == ["dice", "hd95", "sensitivity", "specificity"]
        for name, value in metrics.items():
            assert actual[region][name] == pytest.approx(value), (region, name)
            assert type(actual[region][name]) is float  # JSON-serialisable plain floats


def test_region_scores_on_tiny_label_map():
    pred_regions = labels_to_regions(line_labels(PRED_LINE))
    ref_regions = labels_to_regions(line_labels(REF_LINE))
    assert_scores_equal(region_scores(pred_regions, ref_regions, LINE_SPACING), EXPECTED_LINE_SCORES)


def test_region_scores_rejects_wrong_channel_count():
    with pytest.raises(ValueError):
        region_scores(np.zeros((2, 3, 3, 3), bool), np.zeros((2, 3, 3, 3), bool), (1, 1, 1))


def test_score_label_maps_mixes_2021_and_2023_conventions():
    pred_2021, ref_2021 = line_labels(PRED_LINE), line_labels(REF_LINE)
    pred_2023 = np.where(pred_2021 == 4, 3, pred_2021)
    ref_2023 = np.where(ref_2021 == 4, 3, ref_2021)
    both_2021 = score_label_maps(pred_2021, ref_2021, LINE_SPACING)
    assert_scores_equal(both_2021, EXPECTED_LINE_SCORES)
    assert score_label_maps(pred_2023, ref_2021, LINE_SPACING) == both_2021
    assert score_label_maps(pred_2021, ref_2023, LINE_SPACING) == both_2021
    assert score_label_maps(pred_2023, ref_2023, LINE_SPACING) == both_2021
    # Explicit conventions win over detection.
    assert (
        score_label_maps(pred_2023, ref_2021, LINE_SPACING, pred_convention="brats2023", ref_convention="brats2021")
        == both_2021
    )


def test_score_label_maps_names_the_bad_input():
    good = line_labels(REF_LINE)
    with pytest.raises(DataError, match="prediction.*5"):
        score_label_maps(line_labels([0, 5, 1, 0, 0, 0, 0, 0]), good, LINE_SPACING)
    with pytest.raises(DataError, match="reference.*mixed"):
        score_label_maps(good, line_labels([0, 3, 4, 0, 0, 0, 0, 0]), LINE_SPACING)
    # A 4 is not a BraTS 2023 label when the convention is forced.
    with pytest.raises(DataError, match="reference.*BraTS 2023"):
        score_label_maps(good, good, LINE_SPACING, ref_convention="brats2023")
    with pytest.raises(DataError, match="prediction.*non-integer"):
        score_label_maps(good.astype(float) + 0.5, good, LINE_SPACING)
    with pytest.raises(DataError, match="prediction.*NaN"):
        score_label_maps(np.where(good == 4, np.nan, good.astype(float)), good, LINE_SPACING)


# ------------------------------------------------------------------ files


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([*LINE_SPACING, 1.0]) if affine is None else affine), str(path))
    return path


def test_score_files_good_pair_uses_reference_zooms(tmp_path):
    # Spacing (2, 1, 1) comes only from the affine/header: the hand-computed mm values hold.
    pred = write_nifti(tmp_path / "pred.nii.gz", line_labels(PRED_LINE).astype(np.uint8))
    ref = write_nifti(tmp_path / "ref.nii.gz", line_labels(REF_LINE).astype(np.uint8))
    assert_scores_equal(score_files(pred, ref), EXPECTED_LINE_SCORES)


def test_score_files_accepts_2023_prediction_and_float_labels(tmp_path):
    pred_2023 = np.where(line_labels(PRED_LINE) == 4, 3, line_labels(PRED_LINE)).astype(np.float32)
    pred = write_nifti(tmp_path / "pred-2023.nii.gz", pred_2023)
    ref = write_nifti(tmp_path / "ref.nii", line_labels(REF_LINE).astype(np.int16))
    assert_scores_equal(score_files(pred, ref), EXPECTED_LINE_SCORES)


def test_score_files_truncated_gzip(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.choice([0, 1, 2, 4], size=(32, 32, 32)).astype(np.uint8)  # incompressible enough
    good = write_nifti(tmp_path / "ref.nii.gz", volume)
    broken = write_nifti(tmp_path / "pred_truncated.nii.gz", volume)
    raw = broken.read_bytes()
    broken.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as caught:
        score_files(broken, good)
    message = str(caught.value)
    assert "pred_truncated.nii.gz" in message and "\n" not in message
    assert caught.value.path == broken


def test_score_files_not_a_nifti(tmp_path):
    ref = write_nifti(tmp_path / "ref.nii.gz", line_labels(REF_LINE).astype(np.uint8))
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"this is not a NIfTI header"))
    with pytest.raises(DataError, match="garbage.nii.gz"):
        score_files(garbage, ref)


def test_score_files_missing_file(tmp_path):
    ref = write_nifti(tmp_path / "ref.nii.gz", line_labels(REF_LINE).astype(np.uint8))
    with pytest.raises(DataError, match="nowhere.nii.gz.*not found"):
        score_files(tmp_path / "nowhere.nii.gz", ref)
    with pytest.raises(DataError, match="missing_ref.nii.gz"):
        score_files(ref, tmp_path / "missing_ref.nii.gz")


def test_score_files_shape_mismatch(tmp_path):
    pred = write_nifti(tmp_path / "pred.nii.gz", np.zeros((4, 4, 4), np.uint8))
    ref = write_nifti(tmp_path / "ref.nii.gz", np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(DataError, match=r"pred.nii.gz.*shape.*ref.nii.gz"):
        score_files(pred, ref)


def test_score_files_affine_mismatch(tmp_path):
    data = line_labels(REF_LINE).astype(np.uint8)
    shifted = np.diag([*LINE_SPACING, 1.0])
    shifted[0, 3] = 0.5  # half a millimetre off: a different grid
    pred = write_nifti(tmp_path / "pred.nii.gz", data, shifted)
    ref = write_nifti(tmp_path / "ref.nii.gz", data)
    with pytest.raises(DataError, match=r"pred.nii.gz.*affine"):
        score_files(pred, ref)
    # Within the 1e-3 tolerance is the same grid.
    shifted[0, 3] = 5e-4
    write_nifti(pred, data, shifted)
    assert score_files(pred, ref)["WT"]["dice"] == 1.0


def test_score_files_unknown_labels(tmp_path):
    bad = write_nifti(tmp_path / "labels05.nii.gz", line_labels([0, 5, 5, 0, 0, 0, 0, 0]).astype(np.uint8))
    ref = write_nifti(tmp_path / "ref.nii.gz", line_labels(REF_LINE).astype(np.uint8))
    with pytest.raises(DataError, match=r"labels05.nii.gz.*\{5\}"):
        score_files(bad, ref)
    with pytest.raises(DataError, match=r"labels05.nii.gz.*reference"):
        score_files(ref, bad)


def test_score_files_nan_and_non_integer(tmp_path):
    ref = write_nifti(tmp_path / "ref.nii.gz", line_labels(REF_LINE).astype(np.uint8))
    nan_map = line_labels(REF_LINE).astype(np.float32)
    nan_map[2] = np.nan
    nan_file = write_nifti(tmp_path / "nan.nii.gz", nan_map)
    with pytest.raises(DataError, match="nan.nii.gz.*NaN"):
        score_files(nan_file, ref)
    fractional = write_nifti(tmp_path / "frac.nii.gz", line_labels(REF_LINE).astype(np.float32) / 4)
    with pytest.raises(DataError, match="frac.nii.gz.*non-integer"):
        score_files(fractional, ref)
