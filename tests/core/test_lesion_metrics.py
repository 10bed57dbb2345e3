"""BraTS 2023 lesion-wise Dice/HD95; every expected value is derived by hand in the comments."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from fedtumor.core.brats_scores import CHALLENGE_METRICS, all_region_scores, score_files_all
from fedtumor.core.lesion_metrics import LESION_HD95_PENALTY, lesion_scores
from fedtumor.core.regions import labels_to_regions

SHAPE = (48, 48, 48)


def cube(corner, size=4, shape=SHAPE):
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(c, c + s) for c, s in zip(corner, np.broadcast_to(size, 3)))] = True
    return out


def test_perfect_single_lesion():
    ref = cube((10, 10, 10))
    scores = lesion_scores(ref, ref)
    assert (scores.lesion_dice, scores.lesion_hd95, scores.tp, scores.fn, scores.fp) == (1.0, 0.0, 1, 0, 0)


def test_missed_lesion_and_false_positive_score_zero_and_374():
    ref, pred = cube((5, 5, 5)), cube((35, 35, 35))
    scores = lesion_scores(pred, ref)
    # One missed lesion (0, 374) and one false positive (0, 374): (0 + 0) / 2 and (374 + 374) / 2.
    assert (scores.tp, scores.fn, scores.fp) == (0, 1, 1)
    assert scores.lesion_dice == 0.0
    assert scores.lesion_hd95 == LESION_HD95_PENALTY == 374.0


def test_false_positive_halves_a_perfect_score():
    ref = cube((5, 5, 5))
    scores = lesion_scores(ref | cube((35, 35, 35)), ref)
    assert scores.lesion_dice == pytest.approx(0.5)  # (1 + 0) / 2
    assert scores.lesion_hd95 == pytest.approx(187.0)  # (0 + 374) / 2


def test_lesions_of_at_most_50_mm3_are_dropped_by_volume_in_mm3():
    big = cube((5, 5, 5))
    small = np.zeros(SHAPE, bool)
    small[30:35, 30:35, 30:32] = True  # 50 voxels = 50 mm^3 at 1 mm: "at most 50" is dropped
    at_1mm = lesion_scores(big, big | small)
    assert (at_1mm.lesion_dice, at_1mm.fn, at_1mm.small) == (1.0, 0, 1)
    # One more voxel (51 mm^3) is kept and missed: (1 + 0) / 2.
    small[30, 30, 32] = True
    assert lesion_scores(big, big | small).lesion_dice == pytest.approx(0.5)
    # The threshold is physical: 27 voxels of 2 mm are 216 mm^3, kept and missed.
    tiny = cube((30, 30, 30), size=3)
    assert lesion_scores(big, big | tiny).lesion_dice == 1.0
    at_2mm = lesion_scores(big, big | tiny, spacing=(2.0, 2.0, 2.0))
    assert (at_2mm.lesion_dice, at_2mm.fn) == (pytest.approx(0.5), 1)


def test_a_prediction_hitting_a_dropped_lesion_is_not_a_false_positive():
    big, tiny = cube((5, 5, 5)), cube((30, 30, 30), size=3)
    scores = lesion_scores(big | tiny, big | tiny)
    assert (scores.tp, scores.fp, scores.small, scores.lesion_dice) == (1, 0, 1, 1.0)


@pytest.mark.parametrize(("gap", "is_hit"), [(3, True), (4, False)])
def test_matching_zone_is_a_three_voxel_dilation(gap, is_hit):
    ref = cube((10, 10, 10))  # x in 10..13
    blob = cube((13 + gap, 11, 11), size=2)  # first blob voxel `gap` voxels beyond the surface
    scores = lesion_scores(ref | blob, ref)
    if is_hit:
        # Merged with the lesion: Dice = 2 * 64 / (64 + 64 + 8).
        assert (scores.tp, scores.fp) == (1, 0)
        assert scores.lesion_dice == pytest.approx(128 / 136)
    else:
        assert (scores.tp, scores.fp) == (1, 1)
        assert scores.lesion_dice == pytest.approx(0.5)


@pytest.mark.parametrize(("gap", "n_lesions"), [(6, 1), (7, 2)])
def test_reference_lesions_whose_dilations_touch_are_merged(gap, n_lesions):
    first = cube((10, 10, 10))  # x in 10..13, dilated to 16
    second = cube((14 + gap, 10, 10))  # dilated down to 11 + gap: touches (26-connected) for gap <= 6
    scores = lesion_scores(first, first | second)
    if n_lesions == 1:
        assert (scores.tp, scores.fn) == (1, 0)
        assert scores.lesion_dice == pytest.approx(2 * 64 / (64 + 128))
    else:
        assert (scores.tp, scores.fn) == (1, 1)
        assert scores.lesion_dice == pytest.approx(0.5)
        assert scores.lesion_hd95 == pytest.approx(187.0)


def test_split_prediction_is_merged_into_one_hit():
    ref = cube((10, 10, 10), size=8)
    split = ref.copy()
    split[14] = False  # a one-voxel cut: two prediction components, both in the zone
    scores = lesion_scores(split, ref)
    assert (scores.tp, scores.fp) == (1, 0)
    assert scores.lesion_dice == pytest.approx(2 * 448 / (448 + 512))


def test_components_use_26_connectivity():
    ref = cube((5, 5, 5))
    corner_touching = cube((30, 30, 30), size=2) | cube((32, 32, 32), size=2)
    assert lesion_scores(ref | corner_touching, ref).fp == 1


def test_empty_cases():
    empty = np.zeros(SHAPE, bool)
    both = lesion_scores(empty, empty)
    assert (both.lesion_dice, both.lesion_hd95) == (1.0, 0.0)
    only_prediction = lesion_scores(cube((5, 5, 5)), empty)
    assert (only_prediction.lesion_dice, only_prediction.lesion_hd95, only_prediction.fp) == (0.0, 374.0, 1)
    only_reference = lesion_scores(empty, cube((5, 5, 5)))
    assert (only_reference.lesion_dice, only_reference.lesion_hd95, only_reference.fn) == (0.0, 374.0, 1)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="shape"):
        lesion_scores(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 5), bool))
    with pytest.raises(ValueError, match="3D"):
        lesion_scores(np.zeros((4, 4), bool), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="dilation_iterations"):
        lesion_scores(cube((1, 1, 1)), cube((1, 1, 1)), dilation_iterations=-1)


def _labels(et_value):
    labels = np.zeros(SHAPE, np.uint8)
    labels[cube((5, 5, 5), size=12)] = 2
    labels[cube((8, 8, 8), size=6)] = et_value
    labels[cube((10, 10, 10), size=2)] = 1
    labels[cube((34, 34, 34), size=5)] = et_value  # a second, ET-only lesion
    return labels


def test_both_label_conventions_give_the_same_scores(tmp_path):
    affine = np.eye(4)
    pred_2021 = _labels(4)
    pred_2021[34:39, 34:39, 34:39] = 0  # the ET-only lesion is missed
    ref_2021 = _labels(4)
    paths = {}
    for name, data in {
        "pred21": pred_2021,
        "ref21": ref_2021,
        "pred23": np.where(pred_2021 == 4, 3, pred_2021),
        "ref23": np.where(ref_2021 == 4, 3, ref_2021),
    }.items():
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), str(paths[name]))
    scores_2021 = score_files_all(paths["pred21"], paths["ref21"])
    assert score_files_all(paths["pred23"], paths["ref23"]) == scores_2021
    assert score_files_all(paths["pred21"], paths["ref23"]) == scores_2021
    # ET and TC lose the second lesion ((1 + 0) / 2); WT too, it is outside the oedema.
    for region in ("ET", "TC", "WT"):
        assert scores_2021[region]["lesion_dice"] == pytest.approx(0.5)
        assert scores_2021[region]["lesion_fn"] == 1.0
    # An empty prediction (a missing file) scores zero everywhere.
    missing = score_files_all(None, paths["ref21"])
    assert all(missing[r]["lesion_dice"] == 0.0 and missing[r]["dice"] == 0.0 for r in missing)


def test_all_region_scores_keep_the_legacy_metrics_first():
    labels = labels_to_regions(_labels(4))
    scores = all_region_scores(labels, labels, counts=False)
    assert list(scores["ET"]) == ["dice", "hd95", "sensitivity", "specificity", *CHALLENGE_METRICS]


def test_cropping_is_exact_next_to_the_array_edge():
    # Lesions touching the array edge, a hit 3 voxels beyond one, a false positive far away:
    # embedding the volume in a larger one (nothing around it) must not change a thing.
    ref = cube((0, 0, 0)) | cube((0, 20, 0), size=5)
    pred = cube((0, 0, 0)) | cube((6, 0, 0), size=2) | cube((40, 40, 40), size=4)
    padded = [np.pad(m, 6) for m in (pred, ref)]
    assert lesion_scores(*padded) == lesion_scores(pred, ref)
    scores = lesion_scores(pred, ref)
    assert (scores.tp, scores.fn, scores.fp) == (1, 1, 1)
