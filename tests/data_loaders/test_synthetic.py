"""The synthetic cohort: layout, labels, geometry, partitions, cache, determinism and site effects.

One small cohort (64^3, 3 sites) is generated once per module and shared; checks that need a
second generation regenerate single subjects in memory instead of whole cohorts.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from data_loaders.site import ensure_synthetic_cohort, synthetic_cohort_dir
from data_loaders.synthetic import GENERATOR_VERSION, MODALITIES, CohortInfo, generate_cohort
from data_loaders.synthetic.geometry import output_affine
from data_loaders.synthetic.parameters import CohortParameters, validated_parameters
from data_loaders.synthetic.sites import SubjectPlan, draw_site_profile, long_tail_site_sizes, plan_subjects
from data_loaders.synthetic.subject import synthesize_subject
from data_loaders.synthetic.writing import save_subject
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError

SITES, SUBJECTS, TEST_SUBJECTS, SEED, SHAPE = 3, 10, 2, 7, 64
FILE_SUFFIXES = ("t1", "t1ce", "t2", "flair", "seg")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> CohortInfo:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    return generate_cohort(
        out, n_sites=SITES, n_subjects=SUBJECTS, seed=SEED, shape=SHAPE, n_test=TEST_SUBJECTS, progress=False
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def partition_rows(cohort: CohortInfo) -> list[dict[str, str]]:
    return read_csv(cohort.root / "partitioning.csv")


def heldout_ids(cohort: CohortInfo) -> list[str]:
    return [row["Subject_ID"] for row in read_csv(cohort.root / "heldout.csv")]


def all_subject_ids(cohort: CohortInfo) -> list[str]:
    return [row["Subject_ID"] for row in partition_rows(cohort)] + heldout_ids(cohort)


def load(cohort: CohortInfo, subject_id: str, suffix: str) -> nib.Nifti1Image:
    return nib.load(cohort.root / subject_id / f"{subject_id}_{suffix}.nii.gz")


def array(cohort: CohortInfo, subject_id: str, suffix: str) -> np.ndarray:
    return np.asanyarray(load(cohort, subject_id, suffix).dataobj)


def cohort_record(cohort: CohortInfo) -> dict:
    return json.loads((cohort.root / "cohort.json").read_text())


# --------------------------------------------------------------------------- layout and files


def test_info_describes_the_cohort(cohort):
    assert cohort.root.is_absolute() and cohort.montage.is_absolute()
    assert (cohort.n_sites, cohort.n_subjects, cohort.n_test, cohort.cached) == (SITES, SUBJECTS, TEST_SUBJECTS, False)
    assert cohort.montage == cohort.root / "montage.png"
    assert cohort.montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_brats_2021_layout_for_every_subject(cohort):
    ids = all_subject_ids(cohort)
    assert len(ids) == SUBJECTS + TEST_SUBJECTS
    folders = sorted(p.name for p in cohort.root.iterdir() if p.is_dir())
    assert folders == sorted(ids)
    for subject_id in ids:
        assert subject_id.startswith("SYNTH_") and len(subject_id) == len("SYNTH_00001")
        names = sorted(p.name for p in (cohort.root / subject_id).iterdir())
        assert names == sorted(f"{subject_id}_{suffix}.nii.gz" for suffix in FILE_SUFFIXES)


def test_dtypes_shapes_affines_and_spacing(cohort):
    spacing = 192.0 / SHAPE
    for subject_id in all_subject_ids(cohort):
        images = {suffix: load(cohort, subject_id, suffix) for suffix in FILE_SUFFIXES}
        reference = images["seg"].affine
        for suffix, image in images.items():
            assert image.shape == (SHAPE,) * 3, (subject_id, suffix)
            np.testing.assert_allclose(image.affine, reference)
            np.testing.assert_allclose(image.header.get_zooms(), (spacing,) * 3)
            assert image.get_data_dtype() == (np.uint8 if suffix == "seg" else np.float32)
        # RAS, isotropic, world origin at the centre of the cube.
        np.testing.assert_allclose(reference[:3, :3], np.diag([spacing] * 3))
        np.testing.assert_allclose(reference @ np.array([(SHAPE - 1) / 2] * 3 + [1.0]), [0, 0, 0, 1], atol=1e-6)
        assert nib.aff2axcodes(reference) == ("R", "A", "S")


def test_images_are_skull_stripped(cohort):
    for subject_id in all_subject_ids(cohort):
        images = [array(cohort, subject_id, m) for m in MODALITIES]
        brain = images[0] != 0
        assert 0.15 < brain.mean() < 0.6  # a brain, not the whole cube
        for image in images:
            assert np.isfinite(image).all() and image.min() >= 0
            assert np.array_equal(image != 0, brain)  # one brain mask for all four modalities
        border = np.ones_like(brain)
        border[1:-1, 1:-1, 1:-1] = False
        assert not brain[border].any()
        assert brain[array(cohort, subject_id, "seg") > 0].all()  # the tumour lies inside the brain


# --------------------------------------------------------------------------- labels


def test_labels_are_brats_2021_and_every_subject_has_a_tumour(cohort):
    for subject_id in all_subject_ids(cohort):
        seg = array(cohort, subject_id, "seg")
        assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4}
        assert (seg > 0).sum() > 0


def test_labels_are_nested(cohort):
    # Necrosis inside the tumour core, the core inside the whole tumour: dilating by one voxel stays inside.
    for subject_id in all_subject_ids(cohort):
        seg = array(cohort, subject_id, "seg")
        whole, core, necrosis = seg > 0, np.isin(seg, (1, 4)), seg == 1
        assert not (ndimage.binary_dilation(core) & ~whole).any(), subject_id
        assert not (ndimage.binary_dilation(necrosis) & ~core).any(), subject_id


def test_cohort_json_records_parameters_sites_and_volumes(cohort):
    record = cohort_record(cohort)
    assert record["generator_version"] == GENERATOR_VERSION
    assert record["parameters"] == {
        "n_sites": SITES,
        "n_subjects": SUBJECTS,
        "n_test": TEST_SUBJECTS,
        "seed": SEED,
        "shape": SHAPE,
        "spacing_mm": 192.0 / SHAPE,
    }
    assert [site["site"] for site in record["sites"]] == list(range(1, SITES + 1))
    assert {"bias_coefficient", "noise_std", "log_gamma", "intensity_scale"} <= set(record["sites"][0])
    subjects = {s["subject_id"]: s for s in record["subjects"]}
    assert sorted(subjects) == sorted(all_subject_ids(cohort))
    subject_id = heldout_ids(cohort)[0]
    seg = array(cohort, subject_id, "seg")
    voxel_ml = (192.0 / SHAPE) ** 3 / 1000
    for name, value in (("NCR", 1), ("ED", 2), ("ET", 4)):
        assert subjects[subject_id]["volume_ml"][name] == pytest.approx((seg == value).sum() * voxel_ml, abs=1e-3)


# --------------------------------------------------------------------------- partitions


def test_partitioning_csv(cohort):
    rows = partition_rows(cohort)
    assert list(rows[0].keys()) == ["Partition_ID", "Subject_ID"]
    sizes = np.bincount([int(row["Partition_ID"]) for row in rows], minlength=SITES + 1)[1:]
    assert len(sizes) == SITES and sizes.sum() == SUBJECTS and sizes.min() >= 3
    assert len({row["Subject_ID"] for row in rows}) == SUBJECTS
    record = {s["subject_id"]: s for s in cohort_record(cohort)["subjects"]}
    assert all(record[row["Subject_ID"]]["site"] == int(row["Partition_ID"]) for row in rows)


def test_heldout_csv_is_disjoint_from_partitions(cohort):
    assert (cohort.root / "heldout.csv").read_text().splitlines()[0] == "Subject_ID"
    held_out = heldout_ids(cohort)
    assert len(held_out) == len(set(held_out)) == TEST_SUBJECTS
    assert not set(held_out) & {row["Subject_ID"] for row in partition_rows(cohort)}
    record = {s["subject_id"]: s for s in cohort_record(cohort)["subjects"]}
    assert all(record[s]["site"] is None and 1 <= record[s]["profile_site"] <= SITES for s in held_out)


@pytest.mark.parametrize("seed", range(20))
def test_site_sizes_are_long_tailed(seed):
    sizes = long_tail_site_sizes(4, 24, np.random.default_rng(seed))
    assert sum(sizes) == 24 and min(sizes) >= 3
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] >= 1.5 * sizes[-1]  # FeTS-like: the largest site dwarfs the smallest


def test_default_test_subjects():
    assert validated_parameters(4, 24, 0, 64, None).n_test == 5  # about 20%
    assert validated_parameters(3, 9, 0, 64, None).n_test == 2  # never fewer than two


# --------------------------------------------------------------------------- parameter errors

BAD_PARAMETERS = [
    ({"n_sites": 0}, "synth-sites", "--sites"),
    ({"n_subjects": 11}, "synth-subjects", "--subjects"),
    ({"seed": -1}, "synth-seed", "--seed"),
    ({"shape": 16}, "synth-shape", "--shape"),
    ({"n_test": 0}, "synth-test-subjects", "--test-subjects"),
]


@pytest.mark.parametrize(("changed", "key", "option"), BAD_PARAMETERS, ids=[case[1] for case in BAD_PARAMETERS])
def test_a_bad_parameter_is_a_config_error_naming_its_key(tmp_path, changed, key, option):
    arguments = {"n_sites": 4, "n_subjects": 12, "seed": 0, "shape": 64, "n_test": 2, **changed}
    with pytest.raises(ConfigError) as caught:
        generate_cohort(tmp_path / "cohort", progress=False, **arguments)
    message = str(caught.value)
    assert message.startswith(f"run-config key '{key}' (fedtumor synth {option}): ")
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)  # callers that caught ValueError still do
    assert not (tmp_path / "cohort").exists()  # checked before anything is written


def test_too_few_subjects_says_how_many_the_sites_need(tmp_path):
    with pytest.raises(ConfigError, match=r"5 subjects cannot fill 4 sites \(at least 3 each, so at least 12\)"):
        generate_cohort(tmp_path, n_sites=4, n_subjects=5, seed=0, progress=False)


def test_the_federation_gets_a_config_error_naming_synth_subjects(monkeypatch, tmp_path):
    # The ServerApp derives the sites from its node count when synth-sites is 0.
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path))
    config = RunConfig(synth_subjects=8, synth_test_subjects=2)
    with pytest.raises(ConfigError, match=r"^run-config key 'synth-subjects' .*: 8 subjects cannot fill 4 sites"):
        ensure_synthetic_cohort(config, n_sites=4)
    assert not synthetic_cohort_dir(config, 4).exists()


def test_fedtumor_synth_prints_one_line_naming_the_option(tmp_path):
    from typer.testing import CliRunner

    from fedtumor.cli import app

    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "c"), "--sites", "4", "--subjects", "5"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "'synth-subjects' (fedtumor synth --subjects): 5 subjects cannot fill 4 sites" in lines[0]
    assert not (tmp_path / "c").exists()


# --------------------------------------------------------------------------- cache


def test_second_call_reuses_the_cohort_without_writing(cohort):
    files = [p for p in cohort.root.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    started = time.perf_counter()
    again = generate_cohort(
        cohort.root, n_sites=SITES, n_subjects=SUBJECTS, seed=SEED, shape=SHAPE, n_test=TEST_SUBJECTS, progress=True
    )
    assert time.perf_counter() - started < 2.0
    assert again.cached and again.root == cohort.root
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in cohort.root.rglob("*") if p.is_file()) == sorted(files)


def test_other_parameters_into_the_same_folder_raise(cohort):
    for changed in ({"seed": SEED + 1}, {"n_subjects": SUBJECTS + 1}, {"n_test": TEST_SUBJECTS + 1}):
        arguments = {
            "n_sites": SITES,
            "n_subjects": SUBJECTS,
            "seed": SEED,
            "shape": SHAPE,
            "n_test": TEST_SUBJECTS,
            **changed,
        }
        with pytest.raises(ValueError, match=str(cohort.root)):
            generate_cohort(cohort.root, progress=False, **arguments)
    assert cohort_record(cohort)["parameters"]["seed"] == SEED


def test_a_folder_with_other_data_is_never_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=str(tmp_path)):
        generate_cohort(tmp_path, n_sites=1, n_subjects=3, seed=0, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


# --------------------------------------------------------------------------- determinism


def plans_by_id(seed: int) -> dict[str, SubjectPlan]:
    params = CohortParameters(n_sites=SITES, n_subjects=SUBJECTS, n_test=TEST_SUBJECTS, seed=seed, shape=SHAPE)
    return {plan.subject_id: plan for plan in plan_subjects(params)}


def regenerate(subject_id: str, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    params = CohortParameters(n_sites=SITES, n_subjects=SUBJECTS, n_test=TEST_SUBJECTS, seed=seed, shape=SHAPE)
    plan = plans_by_id(seed)[subject_id]
    return synthesize_subject(plan, draw_site_profile(params, plan.profile_site), params)


def test_same_seed_regenerates_a_subject_exactly_and_out_of_order(cohort, tmp_path):
    subject_id = heldout_ids(cohort)[-1]  # generated last in the cohort, first here
    images, seg = regenerate(subject_id, SEED)
    on_disk = array(cohort, subject_id, "seg")
    assert seg.dtype == on_disk.dtype and seg.tobytes() == on_disk.tobytes()
    for modality in MODALITIES:
        np.testing.assert_array_equal(images[modality], array(cohort, subject_id, modality))
    # The files themselves are byte-identical too (gzip without a timestamp), so manifests hash stably.
    save_subject(tmp_path / subject_id, subject_id, images, seg, output_affine(SHAPE))
    for suffix in FILE_SUFFIXES:
        name = f"{subject_id}/{subject_id}_{suffix}.nii.gz"
        assert (tmp_path / name).read_bytes() == (cohort.root / name).read_bytes(), name


def test_different_seed_gives_a_different_cohort(cohort):
    assert plans_by_id(SEED) == plans_by_id(SEED)
    subject_id = partition_rows(cohort)[0]["Subject_ID"]
    images, seg = regenerate(subject_id, SEED + 1)
    assert not np.array_equal(seg, array(cohort, subject_id, "seg"))
    assert not np.array_equal(images["t1"], array(cohort, subject_id, "t1"))


def test_torch_global_random_state_is_left_alone(cohort):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    regenerate(heldout_ids(cohort)[0], SEED)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- site effects


def test_sites_differ_more_than_subjects_within_a_site(cohort):
    # Log median brain intensity per subject: the scanner's scale, gamma and contrast are per site.
    by_site: dict[int, list[float]] = {}
    for row in partition_rows(cohort):
        t1 = array(cohort, row["Subject_ID"], "t1")
        by_site.setdefault(int(row["Partition_ID"]), []).append(float(np.log(np.median(t1[t1 > 0]))))
    site_means = [np.mean(values) for values in by_site.values()]
    within = np.mean([np.var(values) for values in by_site.values()])
    assert np.var(site_means) > 4 * within


def test_site_profiles_differ(cohort):
    sites = cohort_record(cohort)["sites"]
    for name in ("bias_coefficient", "noise_std", "log_gamma", "intensity_scale", "tumour_median_wt_ml"):
        assert len({site[name] for site in sites}) == SITES, name
