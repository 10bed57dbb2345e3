"""The synthetic cohort on the BraTS grid: the real case's header, its brain position, 1 mm preprocessing.

The real BraTS case (beside the checkout) is the target: its affine, shape and brain bounding box
are read from its files here, never copied into the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from typer.testing import CliRunner

from data_loaders.layouts import find_subject
from data_loaders.pipelines import LABEL_KEY, PreprocessingSettings, preprocess_subject
from data_loaders.synthetic import MODALITIES, generate_cohort
from data_loaders.synthetic.bias_field import SeparableBiasField
from data_loaders.synthetic.parameters import CohortParameterError
from data_loaders.synthetic.tumour import ED, ET, NCR
from fedtumor.cli import app
from tests import REAL_CASE_ID

BRAIN_POSITION_TOLERANCE_MM = 10.0  # random pose (+-3 mm, +-4 degrees) and head size move the centre
MIN_BRAIN_OVERLAP_DICE = 0.85  # measured 0.87-0.90; with the A-P or I-S axis flipped 0.79-0.82


def subject_ids(cohort: Path) -> list[str]:
    return [record["subject_id"] for record in json.loads((cohort / "cohort.json").read_text())["subjects"]]


def real_image(real_case: Path, suffix: str) -> nib.Nifti1Image:
    return nib.load(real_case / f"{REAL_CASE_ID}-{suffix}.nii.gz")


def brain_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inside = np.argwhere(mask)
    return inside.min(axis=0), inside.max(axis=0)


def test_every_file_has_the_real_case_grid_and_header(brats_geometry_cohort, real_case_2023):
    reference = real_image(real_case_2023, "t1n")
    for sid in subject_ids(brats_geometry_cohort):
        for suffix in (*MODALITIES, "seg"):
            image = nib.load(brats_geometry_cohort / sid / f"{sid}_{suffix}.nii.gz")
            assert image.shape == reference.shape, (sid, suffix)
            np.testing.assert_array_equal(image.affine, reference.affine)
            assert nib.aff2axcodes(image.affine) == nib.aff2axcodes(reference.affine) == ("L", "P", "S")
            assert image.header.get_zooms() == reference.header.get_zooms() == (1.0, 1.0, 1.0)
            assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1


def test_brains_sit_where_the_real_brain_sits_and_fit_the_grid(brats_geometry_cohort, real_case_2023):
    low, high = brain_box(real_image(real_case_2023, "t1n").get_fdata() > 0)
    real_centre = (low + high) / 2.0
    for sid in subject_ids(brats_geometry_cohort):
        flair = nib.load(brats_geometry_cohort / sid / f"{sid}_flair.nii.gz").get_fdata() > 0
        low, high = brain_box(flair)
        centre = (low + high) / 2.0
        assert np.abs(centre - real_centre).max() <= BRAIN_POSITION_TOLERANCE_MM, (sid, centre, real_centre)
        assert (low > 0).all() and (high < np.array(flair.shape) - 1).all(), (sid, low, high)  # never cut
        assert 1000 < flair.sum() / 1000 < 1900, sid  # mL: an adult brain, like the real one


def test_brains_overlap_the_real_brain_the_right_way_up(brats_geometry_cohort, real_case_2023):
    real = real_image(real_case_2023, "t1n").get_fdata() > 0
    for sid in subject_ids(brats_geometry_cohort):
        brain = nib.load(brats_geometry_cohort / sid / f"{sid}_flair.nii.gz").get_fdata() > 0
        dice = 2.0 * (brain & real).sum() / (brain.sum() + real.sum())
        assert dice >= MIN_BRAIN_OVERLAP_DICE, (sid, dice)


def test_skull_stripped_and_labels_inside_the_brain(brats_geometry_cohort):
    for sid in subject_ids(brats_geometry_cohort):
        images = {
            m: np.asanyarray(nib.load(brats_geometry_cohort / sid / f"{sid}_{m}.nii.gz").dataobj) for m in MODALITIES
        }
        brain = images["flair"] > 0
        for modality, data in images.items():
            np.testing.assert_array_equal(data > 0, brain, err_msg=f"{sid} {modality}")
            assert (data >= 0).all() and np.isfinite(data).all(), (sid, modality)
        seg = np.asanyarray(nib.load(brats_geometry_cohort / sid / f"{sid}_seg.nii.gz").dataobj)
        assert set(np.unique(seg)) <= {0, NCR, ED, ET} and (seg > 0).sum() >= 2000, sid
        assert not (seg[~brain] > 0).any(), sid


def test_cohort_json_records_the_brats_geometry(brats_geometry_cohort):
    parameters = json.loads((brats_geometry_cohort / "cohort.json").read_text())["parameters"]
    assert parameters["geometry"] == "brats"
    assert parameters["shape"] == [240, 240, 155] and parameters["spacing_mm"] == 1.0


def test_one_mm_preprocessing_keeps_every_label_voxel_and_fits_128_patches(brats_geometry_cohort, tmp_path):
    """The real-data path: at spacing 1 mm the BraTS grid is not resampled, so no label voxel moves."""
    sid = subject_ids(brats_geometry_cohort)[0]
    files = find_subject(brats_geometry_cohort / sid)
    subject = preprocess_subject(files, PreprocessingSettings(spacing_mm=1.0, min_shape=128), cache_dir=None)
    seg = np.asanyarray(nib.load(files.label).dataobj)
    label = subject[LABEL_KEY].data.numpy()
    assert subject[LABEL_KEY].spacing == (1.0, 1.0, 1.0)
    assert {int(v): int((label == v).sum()) for v in (NCR, ED, ET)} == {
        int(v): int((seg == v).sum()) for v in (NCR, ED, ET)
    }
    assert min(subject.spatial_shape) >= 128
    patch = next(iter(tio.data.UniformSampler(128)(subject, num_patches=1)))
    assert patch.spatial_shape == (128, 128, 128)


def test_the_separable_bias_field_is_bit_identical_to_torchios():
    coefficients = np.random.default_rng(0).uniform(-0.5, 0.5, 20).tolist()
    for shape in ((64, 64, 64), (61, 48, 31), (9, 6, 5)):  # odd edges, like BraTS's 155
        data = torch.zeros(1, *shape)
        expected = tio.BiasField.generate_bias_field(data, 3, coefficients)
        np.testing.assert_array_equal(SeparableBiasField.generate_bias_field(data, 3, coefficients), expected)


def test_an_unknown_geometry_names_the_option(tmp_path):
    with pytest.raises(
        CohortParameterError, match=r"'synth-geometry' \(fedtumor synth --geometry\): 'sri24' is not one of cube, brats"
    ):
        generate_cohort(tmp_path / "c", n_sites=1, n_subjects=3, seed=0, geometry="sri24", progress=False)
    assert not (tmp_path / "c").exists()


def test_a_cube_request_into_a_brats_cohort_names_both_geometries(brats_geometry_cohort):
    with pytest.raises(ValueError, match=r"geometry=brats.*shape=64"):
        generate_cohort(brats_geometry_cohort, n_sites=1, n_subjects=3, seed=11, n_test=1, progress=False)


def test_fedtumor_synth_refuses_a_shape_for_the_brats_grid(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "c"), "--geometry", "brats", "--shape", "96"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: fedtumor synth --shape: the brats geometry is fixed (240x240x155 voxels of 1 mm); drop --shape"
    ]
    assert not (tmp_path / "c").exists()
