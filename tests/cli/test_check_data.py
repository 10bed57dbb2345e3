"""`fedtumor check-data`: exit codes, the table, --strict, --no-labels and one-line errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from data_loaders.layouts import discover_subjects
from data_loaders.validation import check_data_dir
from fedtumor.cli import app
from tests.nifti_factory import scan_path, truncate, write_subject

runner = CliRunner()


def test_cli_clean_folder_exits_0_with_table(tmp_path):
    for subject_id in ("BraTS2021_00001", "BraTS2021_00002"):
        write_subject(tmp_path, subject_id)
    result = runner.invoke(app, ["check-data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "BraTS2021_00001" in result.output and "BraTS2021_00002" in result.output
    assert "2 subjects, 0 problems" in result.output


def test_cli_broken_subject_exits_1_naming_file(tmp_path):
    write_subject(tmp_path, "BraTS2021_00001")
    broken = write_subject(tmp_path, "BraTS2021_00002")
    truncate(scan_path(broken, "BraTS2021_00002", "t1ce"))
    result = runner.invoke(app, ["check-data", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "BraTS2021_00002_t1ce.nii.gz" in result.output
    assert "2 subjects, 1 problem" in result.output


def test_cli_fails_on_warnings_only_with_strict(tmp_path):
    write_subject(tmp_path, "S1")  # clean, but 8^3 noise: warned as not skull-stripped, not on the SRI24 grid
    relaxed = runner.invoke(app, ["check-data", str(tmp_path)])
    assert relaxed.exit_code == 0 and "warning: subject S1:" in relaxed.output, relaxed.output
    assert runner.invoke(app, ["check-data", str(tmp_path), "--strict"]).exit_code == 1


def test_cli_no_labels_checks_images_only(tmp_path):
    write_subject(tmp_path, "S1", with_label=False)  # an inference-only site
    unlabelled = runner.invoke(app, ["check-data", str(tmp_path)])
    assert unlabelled.exit_code == 1 and "missing segmentation" in unlabelled.output
    assert runner.invoke(app, ["check-data", str(tmp_path), "--no-labels"]).exit_code == 0
    # A segmentation present is not even opened: a truncated one passes, a truncated image does not.
    labelled = write_subject(tmp_path, "S2")
    truncate(scan_path(labelled, "S2", "seg"))
    assert runner.invoke(app, ["check-data", str(tmp_path), "--no-labels"]).exit_code == 0
    truncate(scan_path(labelled, "S2", "t2"))
    result = runner.invoke(app, ["check-data", str(tmp_path), "--no-labels"])
    assert result.exit_code == 1 and "S2_t2.nii.gz" in result.output and "S2_seg" not in result.output


def test_cli_with_partitions(tmp_path):
    root = tmp_path / "site"
    for subject_id in ("A", "B"):
        write_subject(root, subject_id)
    csv = tmp_path / "p.csv"
    csv.write_text("Partition_ID,Subject_ID\n1,A\n1,B\n")
    assert runner.invoke(app, ["check-data", str(root), "--partitions", str(csv)]).exit_code == 0
    csv.write_text("Partition_ID,Subject_ID\n1,A\n1,B\n1,C\n")
    result = runner.invoke(app, ["check-data", str(root), "--partitions", str(csv)])
    assert result.exit_code == 1 and "subject C" in result.output


@pytest.mark.parametrize(
    "make_args",
    [
        lambda tmp: [str(tmp / "no_such_dir")],
        lambda tmp: [str(tmp)],  # exists, but holds no subjects
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, make_args):
    result = runner.invoke(app, ["check-data", *make_args(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert str(tmp_path) in lines[0]


def test_discovery_and_check_agree_on_subjects(tmp_path):
    write_subject(tmp_path, "A")
    write_subject(tmp_path, "B", layout="brats2023")
    ids = [s.subject_id for s in discover_subjects(tmp_path)]
    assert [c.subject.subject_id for c in check_data_dir(tmp_path).subjects] == ids
