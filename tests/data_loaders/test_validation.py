"""Data checks: every bad input gives a one-line problem naming the subject and the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from data_loaders.check_report import print_report
from data_loaders.layouts import find_subject
from data_loaders.validation import (
    DataReport,
    DataWarning,
    Problem,
    check_data_dir,
    check_subject,
    relative_to_folder,
    validate_or_raise,
)
from fedtumor.core.errors import DataError
from tests.nifti_factory import default_label, scan_path, truncate, write_subject, write_volume

SUBJECT = "BraTS2021_00007"


def only_problem(folder, require_label=True):
    """The single problem of the subject in ``folder``, checked to name subject and file on one line."""
    check = check_subject(find_subject(folder), require_label=require_label)
    assert len(check.problems) == 1, [str(p) for p in check.problems]
    problem = check.problems[0]
    text = str(problem)
    assert "\n" not in text
    assert problem.subject in text and problem.file.name in text
    return problem


def test_clean_subject_has_no_problems_and_reports_geometry(tmp_path):
    check = check_subject(find_subject(write_subject(tmp_path, SUBJECT)))
    assert check.problems == [] and check.ok
    assert check.shape == (8, 8, 8)
    assert check.spacing == (1.0, 1.0, 1.0)
    assert check.labels == (0, 1, 2, 4)


def test_clean_brats2023_subject(tmp_path):
    check = check_subject(find_subject(write_subject(tmp_path, "BraTS-GLI-00001-000", layout="brats2023")))
    assert check.problems == []
    assert check.labels == (0, 1, 2, 3)


def test_missing_modality_names_expected_file(tmp_path):
    problem = only_problem(write_subject(tmp_path, SUBJECT, modalities=("t1", "t2", "flair")))
    assert problem.file.name == f"{SUBJECT}_t1ce.nii.gz"
    assert "missing t1ce" in problem.message and f"{SUBJECT}_t1gd.nii.gz" in problem.message


def test_missing_modality_in_brats2023_names_its_suffix(tmp_path):
    problem = only_problem(write_subject(tmp_path, "B-1", layout="brats2023", modalities=("t1", "t1ce", "t2")))
    assert problem.file.name == "B-1-t2f.nii.gz"
    assert "missing flair" in problem.message


def test_missing_label_only_when_required(tmp_path):
    folder = write_subject(tmp_path, SUBJECT, with_label=False)
    problem = only_problem(folder)
    assert "missing segmentation" in problem.message and problem.file.name == f"{SUBJECT}_seg.nii.gz"
    assert check_subject(find_subject(folder), require_label=False).problems == []


def test_shape_mismatch(tmp_path):
    folder = write_subject(tmp_path, SUBJECT)
    write_volume(scan_path(folder, SUBJECT, "flair"), np.ones((8, 8, 7), np.float32))
    problem = only_problem(folder)
    assert problem.file.name == f"{SUBJECT}_flair.nii.gz"
    assert "shape (8, 8, 7) differs from (8, 8, 8)" in problem.message


def test_label_shape_mismatch(tmp_path):
    folder = write_subject(tmp_path, SUBJECT)
    write_volume(scan_path(folder, SUBJECT, "seg"), np.zeros((6, 8, 8), np.uint8))
    assert only_problem(folder).file.name == f"{SUBJECT}_seg.nii.gz"


def test_affine_mismatch(tmp_path):
    folder = write_subject(tmp_path, SUBJECT)
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    write_volume(scan_path(folder, SUBJECT, "t2"), np.ones((8, 8, 8), np.float32), affine=shifted)
    problem = only_problem(folder)
    assert problem.file.name == f"{SUBJECT}_t2.nii.gz"
    assert "affine differs" in problem.message


def test_affine_within_tolerance_is_fine(tmp_path):
    folder = write_subject(tmp_path, SUBJECT)
    nudged = np.eye(4)
    nudged[0, 3] = 1e-4
    write_volume(scan_path(folder, SUBJECT, "t2"), np.ones((8, 8, 8), np.float32), affine=nudged)
    assert check_subject(find_subject(folder)).problems == []


def test_truncated_nii_gz(tmp_path):
    folder = write_subject(tmp_path, SUBJECT)
    truncate(scan_path(folder, SUBJECT, "t1ce"))
    problem = only_problem(folder)
    assert problem.file.name == f"{SUBJECT}_t1ce.nii.gz"
    assert "cannot read" in problem.message


def test_truncated_uncompressed_nii(tmp_path):
    folder = write_subject(tmp_path, SUBJECT, ext=".nii")
    truncate(scan_path(folder, SUBJECT, "t1", ext=".nii"), keep_fraction=0.3)
    assert "cannot read" in only_problem(folder).message


@pytest.mark.parametrize("garbage", [b"", b"not a nifti at all" * 50, b"\x1f\x8b\x08\x00garbage-after-gzip-magic"])
def test_corrupt_file(tmp_path, garbage):
    folder = write_subject(tmp_path, SUBJECT)
    scan_path(folder, SUBJECT, "flair").write_bytes(garbage)
    problem = only_problem(folder)
    assert problem.file.name == f"{SUBJECT}_flair.nii.gz" and "cannot read" in problem.message


def test_nan_and_inf_voxels(tmp_path):
    folder = write_subject(tmp_path, SUBJECT)
    image = np.ones((8, 8, 8), np.float32)
    image[0, 0, :3] = np.nan
    image[1, 1, 1] = np.inf
    write_volume(scan_path(folder, SUBJECT, "t2"), image)
    problem = only_problem(folder)
    assert problem.message == "3 NaN, 1 Inf voxels"


def test_not_3d(tmp_path):
    folder = write_subject(tmp_path, SUBJECT)
    write_volume(scan_path(folder, SUBJECT, "t1"), np.ones((8, 8, 8, 2), np.float32))
    problem = only_problem(folder)
    assert "not a 3D volume" in problem.message and problem.file.name == f"{SUBJECT}_t1.nii.gz"


def test_complex_voxels_are_unsupported(tmp_path):
    folder = write_subject(tmp_path, SUBJECT)
    write_volume(scan_path(folder, SUBJECT, "seg"), np.zeros((8, 8, 8), np.complex64))
    assert "unsupported voxel type complex64" in only_problem(folder).message


def test_trailing_singleton_axis_counts_as_3d(tmp_path):
    folder = write_subject(tmp_path, SUBJECT)
    write_volume(scan_path(folder, SUBJECT, "t1"), np.ones((8, 8, 8, 1), np.float32))
    assert check_subject(find_subject(folder)).problems == []


def test_brats2021_label_3_is_outside_convention(tmp_path):
    labels = default_label()
    labels[0, 0, 0] = 3
    problem = only_problem(write_subject(tmp_path, SUBJECT, labels=labels))
    assert problem.file.name == f"{SUBJECT}_seg.nii.gz"
    assert "label values 3 outside [0, 1, 2, 4]" in problem.message


def test_brats2023_label_4_is_outside_convention(tmp_path):
    labels = default_label(layout="brats2023")
    labels[0, 0, 0] = 4
    problem = only_problem(write_subject(tmp_path, "BraTS-GLI-00009-000", layout="brats2023", labels=labels))
    assert problem.file.name == "BraTS-GLI-00009-000-seg.nii.gz"
    assert "label values 4 outside [0, 1, 2, 3]" in problem.message


def test_non_integer_labels(tmp_path):
    labels = default_label().astype(np.float32)
    labels[0, 0, 0] = 0.5
    problem = only_problem(write_subject(tmp_path, SUBJECT, labels=labels))
    assert "non-integer label values 0.5" in problem.message


def test_several_problems_are_all_reported(tmp_path):
    labels = default_label()
    labels[0, 0, 0] = 7
    folder = write_subject(tmp_path, SUBJECT, modalities=("t1", "t2", "flair"), labels=labels)
    truncate(scan_path(folder, SUBJECT, "t2"))
    messages = [p.message for p in check_subject(find_subject(folder)).problems]
    assert len(messages) == 3
    assert any("missing t1ce" in m for m in messages)
    assert any("cannot read" in m for m in messages)
    assert any("label values 7" in m for m in messages)


def test_validate_or_raise(tmp_path):
    clean = find_subject(write_subject(tmp_path, "S1"))
    validate_or_raise(clean)
    broken = write_subject(tmp_path, "S2")
    truncate(scan_path(broken, "S2", "t2"))
    with pytest.raises(DataError) as info:
        validate_or_raise(find_subject(broken))
    assert info.value.subject == "S2"
    assert info.value.path.name == "S2_t2.nii.gz"
    assert "subject S2" in str(info.value) and "S2_t2.nii.gz" in str(info.value)


def test_problem_str_is_one_line_with_subject_and_file(tmp_path):
    text = str(Problem("S9", tmp_path / "S9_t1.nii.gz", "bad\nthing"))
    assert text.startswith("subject S9: ") and "S9_t1.nii.gz" in text
    assert "\n" not in text


def test_a_problem_relative_to_the_site_folder_names_no_path_of_the_hospital(tmp_path):
    root = tmp_path / "site"
    write_subject(root, "S1")
    (root / "S1" / "S1_t2.nii.gz").write_bytes(b"not a NIfTI")
    [problem] = check_data_dir(root).problems
    assert str(root) in str(problem)  # check-data, run by the hospital, shows the whole path
    text = str(problem.relative_to(root))
    assert text.startswith("subject S1: S1/S1_t2.nii.gz: cannot read NIfTI (") and "S1/S1_t2.nii.gz is not" in text
    assert str(tmp_path) not in text
    outside = Problem("S1", tmp_path / "partitions.csv", f"see {root}")
    assert str(outside.relative_to(root)) == "subject S1: partitions.csv: see data-dir"


def test_relative_to_folder_leaves_out_only_that_whole_folder():
    root = "/data/site"
    text = f"{root}/S1/a.nii.gz, {root}2/S1/b.nii.gz, /mnt{root}/c.nii.gz, {root}: gone, {root}/"
    assert relative_to_folder(text, root) == (
        "S1/a.nii.gz, /data/site2/S1/b.nii.gz, /mnt/data/site/c.nii.gz, data-dir: gone, data-dir"
    )


# ------------------------------------------------------------------ check_data_dir


def test_check_data_dir_non_existent_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        check_data_dir(tmp_path / "missing")


def test_check_data_dir_collects_all_subjects(tmp_path):
    write_subject(tmp_path, "S1")
    write_subject(tmp_path, "S2", modalities=("t1",))
    report = check_data_dir(tmp_path)
    assert isinstance(report, DataReport)
    assert [c.subject.subject_id for c in report.subjects] == ["S1", "S2"]
    assert len(report.problems) == 3 and all(p.subject == "S2" for p in report.problems)


def make_site(tmp_path, subject_ids):
    for subject_id in subject_ids:
        write_subject(tmp_path, subject_id)
    return tmp_path


def test_partition_csv_subject_missing_on_disk_is_a_problem(tmp_path):
    root = make_site(tmp_path / "site", ["A", "B"])
    csv = tmp_path / "partitioning.csv"
    csv.write_text("Partition_ID,Subject_ID\n1,A\n1,B\n1,C\n2,D\n")
    report = check_data_dir(root, csv)
    assert [str(p) for p in report.problems] == [
        f"subject C: {csv}: listed in partition 1 but no subject folder C on disk"
    ]
    # Partition 2 belongs to another site: a note, not a problem.
    assert any("partitions with no subject here" in n and "2" in n for n in report.notes)


def test_subjects_on_disk_not_in_csv_are_notes(tmp_path):
    root = make_site(tmp_path / "site", ["A", "T1"])
    csv = tmp_path / "p.csv"
    csv.write_text("Subject_ID,Partition_ID\nA,1\n")
    report = check_data_dir(root, csv)
    assert report.problems == []
    assert any("T1" in n for n in report.notes)


def test_csv_without_overlap_is_one_problem(tmp_path):
    root = make_site(tmp_path / "site", ["A"])
    csv = tmp_path / "p.csv"
    csv.write_text("Partition_ID,Subject_ID\n1,X\n1,Y\n")
    report = check_data_dir(root, csv)
    assert len(report.problems) == 1 and "none of the 1 subjects on disk" in report.problems[0].message


def test_unreadable_partition_csv_raises(tmp_path):
    root = make_site(tmp_path / "site", ["A"])
    csv = tmp_path / "p.csv"
    csv.write_text("")
    with pytest.raises(DataError, match="p.csv"):
        check_data_dir(root, csv)


def test_print_report_table_and_summary(tmp_path):
    write_subject(tmp_path, "S1")
    broken = write_subject(tmp_path, "S2")
    truncate(scan_path(broken, "S2", "flair"))
    out = io.StringIO()
    print_report(check_data_dir(tmp_path), Console(file=out, width=120, color_system=None))
    text = out.getvalue()
    assert "S1" in text and "S2" in text and "brats2021" in text and "8x8x8" in text
    assert "0,1,2,4" in text and "ok" in text
    assert "S2_flair.nii.gz" in text
    # 8^3 noise cubes fill their grid (not skull-stripped) on a grid that is not SRI24: warnings, not problems.
    report = check_data_dir(tmp_path)
    assert {w.subject for w in report.warnings} == {"S1", "S2"} and all(w.file for w in report.warnings)
    assert text.rstrip().splitlines()[-1] == f"2 subjects, 1 problem, {len(report.warnings)} warnings"
    warning_lines = [line for line in text.splitlines() if line.startswith("warning:")]
    assert warning_lines == [f"warning: {w}" for w in report.warnings]


def test_files_that_name_no_modality_are_named_with_the_names_expected(tmp_path):
    folder = write_subject(tmp_path, "S1", modalities=("t1", "t2", "flair"))
    write_volume(folder / "S1_t1c.nii.gz", np.ones((8, 8, 8), np.float32))  # the 2023 name in a 2021 folder
    check = check_subject(find_subject(folder))
    [missing] = check.problems
    assert "missing t1ce image (expected S1_t1ce.nii.gz or S1_t1gd.nii.gz" in missing.message
    assert "S1_t1c.nii.gz" in missing.message  # the user learns why their T1ce is "missing"
    [unplaced] = [w for w in check.warnings if w.file.name == "S1_t1c.nii.gz"]
    assert isinstance(unplaced, DataWarning) and "matches no modality of the brats2021 layout" in unplaced.message
    for name in ("S1_t1.nii.gz", "S1_t1ce.nii.gz", "S1_t1gd.nii.gz", "S1_t2.nii.gz", "S1_flair.nii.gz", "S1_seg"):
        assert name in unplaced.message
    assert "\n" not in str(unplaced) and "subject S1" in str(unplaced)


def test_loaders_get_no_onboarding_warnings(tmp_path):
    folder = write_subject(tmp_path, "S1")
    assert check_subject(find_subject(folder)).warnings
    assert check_subject(find_subject(folder), onboarding_checks=False).warnings == []
