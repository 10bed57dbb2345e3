"""`fedtumor evaluate`: scores two label files, or names the bad one in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtumor.cli import app
from tests.core.test_metrics import PRED_LINE, REF_LINE, line_labels, write_nifti


def test_cli_evaluate_json(tmp_path):
    pred = write_nifti(tmp_path / "pred.nii.gz", line_labels(PRED_LINE).astype(np.uint8))
    ref = write_nifti(tmp_path / "ref.nii.gz", line_labels(REF_LINE).astype(np.uint8))
    result = CliRunner().invoke(app, ["evaluate", str(pred), str(ref), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert list(scores) == ["ET", "TC", "WT"]
    for region in scores:
        assert {"dice", "hd95"} <= set(scores[region])
    assert scores["WT"]["hd95"] == pytest.approx(3.1)
    # The table form runs too.
    table = CliRunner().invoke(app, ["evaluate", str(pred), str(ref)])
    assert table.exit_code == 0 and "WT" in table.stdout


def test_cli_evaluate_corrupt_file_is_one_line_error(tmp_path):
    ref = write_nifti(tmp_path / "ref.nii.gz", line_labels(REF_LINE).astype(np.uint8))
    corrupt = tmp_path / "corrupt_seg.nii.gz"
    corrupt.write_bytes(ref.read_bytes()[:40])
    result = CliRunner().invoke(app, ["evaluate", str(corrupt), str(ref), "--json"])
    assert result.exit_code == 2
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == 1
    assert "corrupt_seg.nii.gz" in error_lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


# ------------------------------------------------------------------ folders


def _labels(corner: int) -> np.ndarray:
    """A 24^3 BraTS 2023 label map with one 6^3 tumour (ET core 2^3) at ``corner``."""
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[corner : corner + 6, corner : corner + 6, corner : corner + 6] = 2
    labels[corner + 2 : corner + 4, corner + 2 : corner + 4, corner + 2 : corner + 4] = 3
    return labels


def _save(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nifti(path, data, affine=np.eye(4))


def _read_csv(path):
    import csv

    with path.open() as handle:
        return {row.get("subject", row.get("metric")): row for row in csv.DictReader(handle)}


def test_cli_evaluate_single_pair_has_the_brats_2023_metrics(tmp_path):
    ref = _save(tmp_path / "ref.nii.gz", _labels(4))
    result = CliRunner().invoke(app, ["evaluate", str(ref), str(ref), "--json"])
    assert result.exit_code == 0, result.output
    wt = json.loads(result.stdout)["WT"]
    assert (wt["dice"], wt["nsd"], wt["lesion_dice"], wt["lesion_hd95"], wt["lesion_tp"]) == (1.0, 1.0, 1.0, 0.0, 1.0)


@pytest.mark.parametrize("reference_style", ["flat", "cohort"])
def test_cli_evaluate_folders_scores_missing_as_empty_and_reports_bad_files(tmp_path, reference_style):
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    subjects = ["case-1", "case-2", "case-3", "case-4"]
    for index, subject in enumerate(subjects):
        if reference_style == "flat":
            name = [f"{subject}.nii.gz", f"{subject}-seg.nii.gz", f"{subject}_seg.nii.gz", f"{subject}-seg.nii.gz"]
            _save(refs / name[index], _labels(4))
        else:
            _save(refs / subject / f"{subject}-seg.nii.gz", _labels(4))
    _save(preds / "case-1.nii.gz", _labels(4))  # perfect
    _save(preds / "case-2.nii.gz", _labels(14))  # a miss plus a false positive
    (preds / "case-3.nii.gz").write_bytes(b"not a nifti")  # corrupt
    _save(preds / "orphan.nii.gz", _labels(4))  # no reference: listed, not scored
    out = tmp_path / "scores" / "scores.csv"

    result = CliRunner().invoke(app, ["evaluate", str(preds), str(refs), "--out", str(out)])

    assert result.exit_code == 1, result.output  # a bad file: problems found, the others still scored
    assert "Traceback" not in result.output
    assert "case-3.nii.gz" in result.stderr and "orphan" in result.stderr and "case-4" in result.stderr
    rows = _read_csv(out)
    assert list(rows) == subjects
    assert rows["case-1"]["status"] == "ok" and float(rows["case-1"]["lesion_dice_wt"]) == 1.0
    # case-2: the tumour is missed (0, 374) and the prediction is a false positive (0, 374).
    assert float(rows["case-2"]["lesion_dice_et"]) == 0.0
    assert float(rows["case-2"]["lesion_hd95_et"]) == 374.0
    assert float(rows["case-2"]["lesion_fp_wt"]) == 1.0
    assert rows["case-3"]["status"].startswith("error:") and rows["case-3"]["dice_et"] == ""
    assert rows["case-4"]["status"].startswith("missing prediction")
    assert float(rows["case-4"]["dice_wt"]) == 0.0 and float(rows["case-4"]["lesion_hd95_wt"]) == 374.0

    summary = _read_csv(out.with_name("scores_summary.csv"))
    # Three scored subjects (case-3 unreadable): lesion Dice WT 1, 0, 0.
    assert summary["lesion_dice_wt"]["n"] == "3"
    assert float(summary["lesion_dice_wt"]["mean"]) == pytest.approx(1 / 3)
    assert float(summary["lesion_dice_wt"]["median"]) == 0.0
    assert float(summary["lesion_dice_wt"]["q75"]) == pytest.approx(0.5)
    assert "lesion_dice_wt" in result.stdout  # the summary table


def test_cli_evaluate_mixed_file_and_folder_is_one_line_error(tmp_path):
    ref = _save(tmp_path / "ref.nii.gz", _labels(4))
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), str(ref)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "two files or two folders" in result.stderr
