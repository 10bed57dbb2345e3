"""Finding subjects in the BraTS 2021 / FeTS 2022 / BraTS 2023 folder layouts."""

from __future__ import annotations

import numpy as np
import pytest

from data_loaders.layouts import MODALITIES, discover_subjects, expected_name, expected_names, find_subject
from fedtumor.core.errors import DataError
from fedtumor.core.ordering import natural_key
from tests.nifti_factory import scan_path, write_subject, write_volume


def test_brats2021_layout_maps_every_modality(tmp_path):
    folder = write_subject(tmp_path, "BraTS2021_00000")
    files = find_subject(folder)
    assert files.subject_id == "BraTS2021_00000"
    assert files.layout == "brats2021"
    assert list(files.images) == list(MODALITIES)
    assert files.images["t1ce"].name == "BraTS2021_00000_t1ce.nii.gz"
    assert files.images["t1"].name == "BraTS2021_00000_t1.nii.gz"  # "_t1" must not grab "_t1ce"
    assert files.label.name == "BraTS2021_00000_seg.nii.gz"
    assert files.missing == ()


def test_fets2022_t1gd_counts_as_t1ce(tmp_path):
    files = find_subject(write_subject(tmp_path, "FeTS2022_00001", layout="fets2022"))
    assert files.layout == "brats2021"
    assert files.images["t1ce"].name == "FeTS2022_00001_t1gd.nii.gz"
    assert files.missing == ()


def test_brats2023_suffixes_map_to_canonical_names(tmp_path):
    files = find_subject(write_subject(tmp_path, "BraTS-GLI-00002-000", layout="brats2023"))
    assert files.layout == "brats2023"
    assert {m: p.name for m, p in files.images.items()} == {
        "t1": "BraTS-GLI-00002-000-t1n.nii.gz",
        "t1ce": "BraTS-GLI-00002-000-t1c.nii.gz",
        "t2": "BraTS-GLI-00002-000-t2w.nii.gz",
        "flair": "BraTS-GLI-00002-000-t2f.nii.gz",
    }
    assert files.label.name == "BraTS-GLI-00002-000-seg.nii.gz"


def test_uncompressed_nii_is_accepted(tmp_path):
    files = find_subject(write_subject(tmp_path, "S1", ext=".nii"))
    assert files.missing == ()
    assert files.images["flair"].name == "S1_flair.nii"


def test_nii_gz_preferred_when_both_exist(tmp_path):
    folder = write_subject(tmp_path, "S1")
    write_volume(scan_path(folder, "S1", "t2", ext=".nii"), np.zeros((8, 8, 8), np.float32))
    assert find_subject(folder).images["t2"].name == "S1_t2.nii.gz"


def test_missing_modalities_and_label_are_recorded(tmp_path):
    files = find_subject(write_subject(tmp_path, "S1", modalities=("t1", "flair"), with_label=False))
    assert files.missing == ("t1ce", "t2")
    assert files.label is None
    assert set(files.images) == {"t1", "flair"}


def test_cohort_ignores_non_subject_entries(tmp_path):
    for subject_id in ("site_10", "site_2", "site_1"):
        write_subject(tmp_path, subject_id)
    for name in ("partitioning.csv", "cohort.json", "montage.png", "heldout.csv"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".cache").mkdir()
    write_volume(tmp_path / ".cache" / "x_t1.nii.gz", np.zeros((2, 2, 2)))
    (tmp_path / "docs").mkdir()  # a folder without NIfTI files is not a subject
    (tmp_path / "docs" / "readme.txt").write_text("x")
    (tmp_path / "site_1" / "._site_1_t1.nii.gz").write_bytes(b"AppleDouble debris")

    subjects = discover_subjects(tmp_path)
    assert [s.subject_id for s in subjects] == ["site_1", "site_2", "site_10"]  # numbers by value
    assert all(s.missing == () for s in subjects)
    assert subjects[0].images["t1"].name == "site_1_t1.nii.gz"


def test_single_subject_folder_as_root(tmp_path):
    folder = write_subject(tmp_path, "BraTS2021_00042")
    subjects = discover_subjects(folder)
    assert [s.subject_id for s in subjects] == ["BraTS2021_00042"]
    assert subjects[0].folder == folder


def test_misnamed_scans_still_make_a_subject_with_everything_missing(tmp_path):
    folder = tmp_path / "S1"
    write_volume(folder / "S1_T1w_scan.nii.gz", np.zeros((8, 8, 8)))
    (subject,) = discover_subjects(tmp_path)
    assert subject.subject_id == "S1"
    assert subject.missing == MODALITIES
    assert subject.label is None


def test_files_that_name_no_modality_of_the_layout_are_listed_as_unplaced(tmp_path):
    folder = write_subject(tmp_path, "S1", modalities=("t1", "t2"))
    t1c = write_volume(folder / "S1_t1c.nii.gz", np.zeros((8, 8, 8)))  # a BraTS 2023 suffix in a 2021 folder
    fla = write_volume(folder / "S1_fla.nii.gz", np.zeros((8, 8, 8)))  # no layout's suffix at all
    (folder / "notes.txt").write_text("not a scan")  # not NIfTI: neither a scan nor unplaced
    files = find_subject(folder)
    assert files.layout == "brats2021" and files.missing == ("t1ce", "flair")
    assert sorted(files.unplaced) == sorted([t1c, fla])


def test_a_clean_subject_and_a_losing_duplicate_leave_nothing_unplaced(tmp_path):
    folder = write_subject(tmp_path, "S1")
    write_volume(scan_path(folder, "S1", "t2", ext=".nii"), np.zeros((8, 8, 8), np.float32))  # loses to .nii.gz
    assert find_subject(folder).unplaced == ()
    assert find_subject(write_subject(tmp_path, "S2", layout="brats2023")).unplaced == ()


def test_non_existent_root_raises_naming_it(tmp_path):
    missing = tmp_path / "no_such_site"
    with pytest.raises(DataError, match="no_such_site"):
        discover_subjects(missing)


def test_root_without_subjects_raises_naming_it(tmp_path):
    (tmp_path / "partitioning.csv").write_text("Partition_ID,Subject_ID\n")
    with pytest.raises(DataError, match="no subjects found") as info:
        discover_subjects(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_root_that_is_a_file_raises(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        discover_subjects(path)


def test_expected_names_follow_the_layout():
    assert expected_name("A", "t1ce", "brats2021") == "A_t1ce.nii.gz"
    assert expected_name("B", "flair", "brats2023") == "B-t2f.nii.gz"
    assert expected_name("B", "seg", "brats2023") == "B-seg.nii.gz"
    assert expected_names("B", "brats2023") == [f"B-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f", "seg")]


def test_natural_key_orders_numbers_by_value():
    assert sorted(["10", "2", "1"], key=natural_key) == ["1", "2", "10"]
    assert sorted(["site10", "site9", "Site1"], key=natural_key) == ["Site1", "site9", "site10"]
