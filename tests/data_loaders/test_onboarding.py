"""Onboarding checks on real and synthetic scans: BraTS-preprocessed cases pass silently, raw-looking ones warn.

The real BraTS case must pass with no warning in both layouts; the same case with its skull and
scalp put back, and a synthetic subject with a skull and a noisy background, get the skull-strip
warning; a 5.5 mm-thick copy gets the voxel-size and grid warnings. Built in tmp_path, never in the repo.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torchio as tio
from scipy import ndimage
from typer.testing import CliRunner

from data_loaders.layouts import discover_subjects
from data_loaders.onboarding import (
    MAX_BRAIN_ML,
    MAX_NONZERO_FRACTION,
    grid_warning,
    nonzero_measure,
    skull_strip_warning,
    spacing_warning,
)
from data_loaders.site import check_site_folder, resolve_site
from data_loaders.validation import check_data_dir
from fedtumor.cli import app
from fedtumor.core.config import RunConfig
from tests import REAL_CASE_ID

runner = CliRunner()
SKULL_MM, SCALP_MM = 6.0, 13.0  # outer edge of each shell, from the brain surface (skull ~6 mm, scalp ~7 mm)


def _head_from(case: Path, destination: Path, noise: bool) -> Path:
    """A copy of ``case`` (a subject folder) with a dark skull and a bright scalp around the brain.

    ``noise`` adds the non-zero background of raw scanner output; the segmentation is copied as is.
    """
    destination.mkdir(parents=True)
    images = {p: nib.load(p) for p in sorted(case.glob("*.nii.gz")) if not p.name.split(".")[0].endswith("seg")}
    volumes = {p: np.asanyarray(image.dataobj).astype(np.float32) for p, image in images.items()}
    brain = np.logical_or.reduce([v != 0 for v in volumes.values()])
    spacing = next(iter(images.values())).header.get_zooms()[:3]
    depth = ndimage.distance_transform_edt(~brain, sampling=spacing)  # mm from the brain
    skull = (depth > 0) & (depth <= SKULL_MM)
    scalp = (depth > SKULL_MM) & (depth <= SCALP_MM)
    rng = np.random.default_rng(0)
    for path, data in volumes.items():
        typical = float(np.median(data[brain]))
        data[skull] = 0.05 * typical  # cortical bone: almost no signal
        data[scalp] = 1.2 * typical  # fat: bright in T1
        if noise:
            data += np.abs(rng.normal(0.0, 0.05 * typical, data.shape)).astype(np.float32)  # Rician-like floor
        image = images[path]
        nib.save(
            nib.Nifti1Image(data.astype(image.get_data_dtype()), image.affine, image.header), destination / path.name
        )
    for seg in case.glob("*seg.nii.gz"):
        shutil.copy(seg, destination / seg.name)
    return destination


def _kind(warning) -> str:
    """Which check a warning comes from, by the words that start its message (else the message)."""
    starts = {"looks not skull-stripped": "skull", "voxel size": "spacing", "grid": "grid"}
    return next((kind for start, kind in starts.items() if warning.message.startswith(start)), warning.message)


def _kinds(report) -> list[str]:
    return [_kind(w) for w in report.warnings]


# ------------------------------------------------------------------ the real case


@pytest.mark.parametrize("layout", ["brats2023", "brats2021"])
def test_real_case_passes_check_data_with_no_warning(request, layout):
    case = request.getfixturevalue(f"real_case_{layout[-4:]}")
    result = runner.invoke(app, ["check-data", str(case), "--strict"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "1 subject, 0 problems, 0 warnings"


def test_real_case_measures_like_a_skull_stripped_brain(real_case_2023):
    [files] = discover_subjects(real_case_2023)
    for modality, path in files.images.items():
        image = nib.load(path)
        measure = nonzero_measure(np.asanyarray(image.dataobj), image.header.get_zooms()[:3])
        # An adult brain is 1.1-1.9 L; the 240x240x155 mm box holds 8.9 L.
        assert 0.10 < measure.fraction < 0.25 and 1100 < measure.volume_ml < 1900, (modality, measure)
        assert measure.looks_skull_stripped
    assert nib.aff2axcodes(nib.load(files.images["t1"]).affine) == ("L", "P", "S")  # BraTS orientation


def test_real_case_with_its_skull_put_back_gets_the_skull_strip_warning(real_case_2023, tmp_path):
    head = _head_from(real_case_2023, tmp_path / REAL_CASE_ID, noise=False)
    report = check_data_dir(head)
    assert not report.problems
    # Zero background: only the volume (brain + skull + scalp) gives the head away.
    assert _kinds(report) == ["skull"] * 4
    measure = nonzero_measure(np.asanyarray(nib.load(report.warnings[0].file).dataobj), (1, 1, 1))
    assert measure.fraction < MAX_NONZERO_FRACTION < 1 and measure.volume_ml > MAX_BRAIN_ML
    assert {w.file.name for w in report.warnings} == {p.name for p in discover_subjects(head)[0].images.values()}
    result = runner.invoke(app, ["check-data", str(head)])
    assert result.exit_code == 0, result.output  # a warning does not fail the check ...
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4 and all(f"subject {REAL_CASE_ID}" in w and "BraTS Toolkit" in w for w in warnings)
    assert result.output.strip().splitlines()[-1] == "1 subject, 0 problems, 4 warnings"
    assert runner.invoke(app, ["check-data", str(head), "--strict"]).exit_code == 1  # ... unless --strict


def test_a_5_5_mm_thick_copy_gets_the_voxel_size_and_grid_warnings(real_case_2023, tmp_path):
    [files] = discover_subjects(real_case_2023)
    subject = tio.Subject(
        {name: tio.ScalarImage(path) for name, path in files.images.items()} | {"seg": tio.LabelMap(files.label)}
    )
    thick = tio.Resample((1.0, 1.0, 5.5))(subject)  # every image on one grid, as a 5.5 mm axial series
    folder = tmp_path / REAL_CASE_ID
    folder.mkdir()
    for name, path in [*files.images.items(), ("seg", files.label)]:
        thick[name].save(folder / path.name)
    report = check_data_dir(folder)
    assert not report.problems
    assert sorted(_kinds(report)) == ["grid", "spacing"]  # still skull-stripped: no skull warning
    [spacing] = [w for w in report.warnings if _kind(w) == "spacing"]
    assert "1x1x5.5 mm is anisotropic" in spacing.message and spacing.file.name.endswith("t1n.nii.gz")


# ------------------------------------------------------------------ the synthetic cohort


def test_synthetic_cohort_is_skull_stripped_but_not_on_the_brats_grid(two_site_cohort):
    report = check_data_dir(two_site_cohort)
    assert not report.problems
    subjects = [check.subject.subject_id for check in report.subjects]
    # Honestly: 64^3 at 3 mm is neither 1 mm nor SRI24, but it is skull-stripped.
    assert sorted(_kinds(report)) == sorted(["grid", "spacing"] * len(subjects))
    assert {w.subject for w in report.warnings} == set(subjects)


def test_synthetic_subject_with_a_skull_and_noisy_background_gets_the_skull_strip_warning(two_site_cohort, tmp_path):
    source = sorted(p for p in two_site_cohort.iterdir() if p.is_dir())[0]
    head = _head_from(source, tmp_path / source.name, noise=True)
    report = check_data_dir(head)
    assert not report.problems
    assert sorted(_kinds(report)) == sorted(["grid", "spacing"] + ["skull"] * 4)
    skull = next(w for w in report.warnings if w.message.startswith("looks not skull-stripped"))
    measure = nonzero_measure(np.asanyarray(nib.load(skull.file).dataobj), (3, 3, 3))
    assert measure.fraction > 0.9  # the noise floor leaves almost no voxel at 0


# ------------------------------------------------------------------ a deployed site


def test_a_deployed_site_hands_its_warnings_on_relative_to_data_dir(two_site_cohort, tmp_path):
    site = tmp_path / "hospital"
    source = sorted(p for p in two_site_cohort.iterdir() if p.is_dir())[0]
    shutil.copytree(source, site / source.name)
    lines = check_site_folder(site)  # warnings only: no error
    assert len(lines) == 2 and all(line.startswith(f"warning: subject {source.name}: {source.name}/") for line in lines)
    assert all(str(tmp_path) not in line for line in lines)
    seen: list[str] = []
    resolve_site(RunConfig(), {"data-dir": str(site), "site-id": "site-x"}, on_warning=seen.append)
    assert seen == [f"site site-x: {line}" for line in lines]


# ------------------------------------------------------------------ the measures themselves


def test_measures_validate_their_arguments():
    with pytest.raises(ValueError, match="spacing"):
        nonzero_measure(np.ones((2, 2, 2)), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="empty"):
        nonzero_measure(np.ones((0, 2, 2)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        spacing_warning((1.0, 1.0))


def test_each_measure_names_what_brats_expects():
    assert grid_warning((240, 240, 155)) is None and "240x240x155 SRI24" in grid_warning((256, 256, 30))
    assert spacing_warning((1.0001, 0.9999, 1.0)) is None
    assert "is not 1 mm" in spacing_warning((0.9, 0.9, 0.9)) and "anisotropic" in spacing_warning((0.5, 0.5, 5.5))
    brain = np.pad(np.ones((10, 10, 10)), 5)  # 12.5% of the grid, 1 mL
    assert skull_strip_warning(brain, (1, 1, 1)) is None
    # The same voxels at 14 mm: 2744 mL, a head's volume though only 12.5% of the grid.
    assert "skull-strip" in skull_strip_warning(brain, (14, 14, 14))
