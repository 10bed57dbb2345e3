"""`fedtumor predict`: a folder in, one file per subject out, one line per bad case, exit 1 if any failed."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from fedtumor.cli import app
from tests.data_loaders.test_inference import save_tiny_checkpoint
from tests.nifti_factory import scan_path, truncate, write_subject

SMALL = (24, 24, 20)  # synthetic subjects: every voxel non-zero, so every voxel is brain


@pytest.fixture(scope="module")
def all_tumour_model(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "all_tumour.pt", every_voxel_tumour=True)


def run(*args: str):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_folder_with_good_and_broken_subjects(all_tumour_model, real_case_2023, tmp_path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / real_case_2023.name).symlink_to(real_case_2023)  # read-only real case, never copied
    write_subject(cohort, "MISSING-FLAIR", shape=SMALL, modalities=("t1", "t1ce", "t2"))
    truncate(scan_path(write_subject(cohort, "CORRUPT-T2", shape=SMALL), "CORRUPT-T2", "t2"))
    out = tmp_path / "predictions"

    result = run("--model", all_tumour_model, "--input", cohort, "--out", out, "--device", "cpu")

    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{real_case_2023.name}.nii.gz"]
    written = nib.load(out / f"{real_case_2023.name}.nii.gz")
    assert written.shape == (240, 240, 155)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) == {0, 3}
    errors = error_lines(result)
    assert len(errors) == 2, errors
    assert "CORRUPT-T2" in errors[0] and "CORRUPT-T2_t2.nii.gz" in errors[0]
    assert "MISSING-FLAIR" in errors[1] and "missing flair" in errors[1]
    assert f"wrote {real_case_2023.name} in " in result.stdout
    assert "3 subject(s): 1 written, 0 kept, 2 failed" in result.stdout
    assert "warning:" not in result.stderr  # the real case is skull-stripped
    assert "Traceback" not in result.output


def test_existing_outputs_are_kept_unless_overwrite(all_tumour_model, tmp_path):
    write_subject(tmp_path / "cohort", "S1", shape=SMALL)
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "S1.nii.gz").write_bytes(b"an earlier result")

    kept = run("--model", all_tumour_model, "--input", tmp_path / "cohort", "--out", out)
    assert kept.exit_code == 0, kept.output
    assert (out / "S1.nii.gz").read_bytes() == b"an earlier result"
    assert "1 subject(s): 0 written, 1 kept, 0 failed" in kept.stdout

    replaced = run("--model", all_tumour_model, "--input", tmp_path / "cohort", "--out", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert nib.load(out / "S1.nii.gz").shape == SMALL
    assert sorted(p.name for p in out.iterdir()) == ["S1.nii.gz"]  # no partial file left behind


def test_one_subject_to_one_file_and_a_forced_label_convention(all_tumour_model, tmp_path):
    subject = write_subject(tmp_path, "S1", shape=SMALL)  # BraTS 2021 layout: ET = 4 by default
    default = run("--model", all_tumour_model, "--subject", subject, "--out", tmp_path / "default.nii.gz")
    forced = run(
        "--model", all_tumour_model, "--subject", subject, "--out", tmp_path / "forced.nii", "--labels", "brats2023"
    )
    assert default.exit_code == 0 and forced.exit_code == 0, default.output + forced.output
    assert set(np.unique(np.asarray(nib.load(tmp_path / "default.nii.gz").dataobj)).tolist()) == {4}
    assert set(np.unique(np.asarray(nib.load(tmp_path / "forced.nii").dataobj)).tolist()) == {3}
    # Noise in every voxel is no skull-stripped brain: segmented, but not silently.
    warnings = [line for line in default.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "S1" in warnings[0] and "looks not skull-stripped" in warnings[0], warnings
    assert "1 with warnings" in default.stdout


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("two_subjects_one_file", "holds 2 subjects"),
        ("bad_labels", "--labels"),
        ("missing_model", "model checkpoint not found"),
        ("missing_input", "data folder does not exist"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(all_tumour_model, tmp_path, problem, expected):
    cohort = tmp_path / "cohort"
    for subject_id in ("S1", "S2"):
        write_subject(cohort, subject_id, shape=SMALL)
    args = {"--model": all_tumour_model, "--input": cohort, "--out": tmp_path / "out"}
    if problem == "two_subjects_one_file":
        args["--out"] = tmp_path / "one.nii.gz"
    elif problem == "bad_labels":
        args["--labels"] = "brats2019"
    elif problem == "missing_model":
        args["--model"] = tmp_path / "no-such-run"
    else:
        args["--input"] = tmp_path / "no-such-folder"
    result = run(*[part for pair in args.items() for part in pair])
    assert result.exit_code == 2, result.output
    errors = error_lines(result)
    assert len(errors) == 1 and expected in errors[0], errors
    assert not (tmp_path / "out").exists()
