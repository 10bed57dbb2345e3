"""Normalised surface Dice; expected values are counted by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from fedtumor.core.surface_dice import NSD_TOLERANCE_MM, normalized_surface_dice


def cube(corner, size=4, shape=(20, 20, 20)):
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(c, c + size) for c in corner)] = True
    return out


# A 4^3 cube has 56 surface voxels (64 minus the 2^3 interior). Shifted one voxel along x,
# the surface voxels of one that are also surface voxels of the other (distance 0) are the
# y/z rings of the three shared slices (12 each) = 36; the other 20 are 1 voxel away.
SHIFT_EXACT_FRACTION = 36 / 56


def test_default_tolerance_is_one_mm():
    assert NSD_TOLERANCE_MM == 1.0


def test_identical_and_empty_masks():
    ref = cube((5, 5, 5))
    assert normalized_surface_dice(ref, ref) == 1.0
    empty = np.zeros_like(ref)
    assert normalized_surface_dice(empty, empty) == 1.0
    assert normalized_surface_dice(ref, empty) == 0.0
    assert normalized_surface_dice(empty, ref) == 0.0


def test_one_voxel_shift_is_inside_one_mm_but_not_half_a_mm():
    ref, pred = cube((5, 5, 5)), cube((6, 5, 5))
    assert normalized_surface_dice(pred, ref, tolerance_mm=1.0) == 1.0
    assert normalized_surface_dice(pred, ref, tolerance_mm=0.5) == pytest.approx(SHIFT_EXACT_FRACTION)


def test_tolerance_is_in_mm_on_anisotropic_voxels():
    ref, pred = cube((5, 5, 5)), cube((6, 5, 5))
    spacing = (2.0, 1.0, 1.0)  # the shift is now 2 mm
    # Within 1 mm: the 36 shared surface voxels plus the 4 centre voxels of the inner x face,
    # which are 1 mm (one voxel along y) from the other cube's ring; the outer face is 2 mm away.
    assert normalized_surface_dice(pred, ref, spacing, tolerance_mm=1.0) == pytest.approx(40 / 56)
    assert normalized_surface_dice(pred, ref, spacing, tolerance_mm=2.0) == 1.0


def test_each_surface_is_weighted_by_its_own_size():
    # Reference: 4^3 cube (56 surface voxels); prediction: the same cube plus a far 2^3 cube
    # (8 surface voxels, far away). Reference->prediction: 56/56 within 1 mm; prediction->
    # reference: 56/64. NSD = (1 + 56/64) / 2 (pooling both surfaces would give 112/120).
    ref = cube((2, 2, 2))
    pred = ref | cube((14, 14, 14), size=2)
    assert normalized_surface_dice(pred, ref) == pytest.approx((1 + 56 / 64) / 2)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(cube((1, 1, 1)), cube((1, 1, 1)), tolerance_mm=-1)
    with pytest.raises(ValueError, match="shape"):
        normalized_surface_dice(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool))
