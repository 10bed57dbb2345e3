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
