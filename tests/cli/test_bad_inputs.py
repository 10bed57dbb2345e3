"""Every bad input a user can hand fedtumor: one line naming the culprit, and earlier results left alone.

Data problems go through ``fedtumor check-data`` (what a hospital runs before joining; the
ClientApp raises the same errors, see test_federation_e2e.py). Run-config problems go through
``scripts/simulate.py``, which checks everything it can before Flower starts and exits 2 with
one line on stderr, and through the baselines (``fedtumor centralized`` / ``local``). Each case
runs next to a finished run folder whose files must come out byte for byte the same.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.core.config import RunConfig, app_config_table, load_run_config, require_every_key
from fedtumor.core.errors import ConfigError
from fedtumor.run.files import RESUME_FILE
from fedtumor.run.folder import preflight
from fedtumor.run.resume import ResumeState, save_resume_state
from fedtumor.run.writer import RunWriter
from tests import REPO
from tests.nifti_factory import default_label, scan_path, write_subject, write_volume

# ----------------------------------------------------------------------------- data problems


def _missing_modality(root: Path) -> Path:
    write_subject(root, "S1", modalities=("t1", "t1ce", "t2"))
    return scan_path(root / "S1", "S1", "flair")


def _shape_mismatch(root: Path) -> Path:
    write_subject(root, "S1")
    return write_volume(scan_path(root / "S1", "S1", "t2"), np.ones((8, 8, 9), np.float32))


def _affine_mismatch(root: Path) -> Path:
    write_subject(root, "S1")
    return write_volume(scan_path(root / "S1", "S1", "t2"), np.ones((8, 8, 8), np.float32), np.diag([2, 1, 1, 1]))


def _truncated(root: Path) -> Path:
    write_subject(root, "S1")
    path = scan_path(root / "S1", "S1", "flair")
    path.write_bytes(path.read_bytes()[:200])
    return path


def _nan_voxels(root: Path) -> Path:
    write_subject(root, "S1")
    volume = np.ones((8, 8, 8), np.float32)
    volume[2, 3, 4] = np.nan
    return write_volume(scan_path(root / "S1", "S1", "t1ce"), volume)


def _label_outside_convention(root: Path) -> Path:
    labels = default_label()
    labels[0, 0, 0] = 3  # BraTS 2021 has no label 3
    write_subject(root, "S1", labels=labels)
    return scan_path(root / "S1", "S1", "seg")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_missing_modality, "missing flair"),
        (_shape_mismatch, "shape"),
        (_affine_mismatch, "affine"),
        (_truncated, "cannot read"),
        (_nan_voxels, "NaN"),
        (_label_outside_convention, "label"),
    ],
)
def test_data_problem_is_one_line_naming_subject_and_file(tmp_path, make, words):
    culprit = make(tmp_path / "site")
    result = CliRunner().invoke(app, ["check-data", str(tmp_path / "site")])
    assert result.exit_code == 1, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, result.output
    assert "subject S1" in problems[0] and str(culprit) in problems[0] and words in problems[0], problems[0]


# ----------------------------------------------------------------------------- run config and folders


@pytest.fixture
def finished_run(tmp_path):
    """A run folder as a finished run leaves it, and a snapshot of its bytes."""
    run_dir = tmp_path / "runs" / "study"
    writer = RunWriter(run_dir)
    config = load_run_config({**shipped_config(), "output-dir": str(tmp_path / "runs"), "run-name": "study"})
    writer.write_config({**config.to_run_config(), "num-nodes": 3})
    writer.add_metrics(round=1, scope="global", split="test", metrics={"dice_wt": 0.5})
    writer.write_summary({"strategy": "fedavg", "rounds": 1})
    (run_dir / "audit.jsonl").write_text('{"index":0}\n')
    arrays = {"w": np.ones(3, np.float32)}
    save_resume_state(run_dir, ResumeState(1, arrays, {}, {}, _rng(), "0" * 64))
    return run_dir, _snapshot(run_dir)


def shipped_config() -> dict:
    return app_config_table(REPO)


def _rng() -> dict:
    from fedtumor.run.resume import rng_state

    return rng_state()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def simulate_refuses(overrides: str) -> str:
    """simulate.py's one stderr line for ``overrides``; it must exit 2 before starting Flower."""
    done = subprocess.run(
        [sys.executable, "scripts/simulate.py", "--run-config", overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    return lines[0]


def _cases(run_dir: Path, tmp: Path) -> list[tuple[str, str]]:
    a_file = tmp / "a-file"
    a_file.write_text("not a folder")
    return [
        ("num-server-round=2", "error: unknown run-config key 'num-server-round' (did you mean 'num-server-rounds'?)"),
        ("seed='zero'", "error: run-config key 'seed': expected int, got str 'zero'"),
        ("learning-rate=-1.0", "error: run-config key 'learning-rate': value -1.0 is out of range"),
        ("strategy='fedsgd'", "error: run-config key 'strategy': unknown strategy 'fedsgd'; available: "),
        ("fault-injection='site-1:explode@1'", "error: run-config key 'fault-injection': 'site-1:explode@1': fault"),
        (
            "collaborator-selection='best-sites'",
            "error: run-config key 'collaborator-selection': 'best-sites' is not one of all-sites",
        ),
        (
            "round-hyperparameters='step-decay every=0'",
            "error: run-config key 'round-hyperparameters': step-decay: every must be an integer >= 1",
        ),
        ("seed=[1", "error: cannot parse --run-config 'seed=[1': "),
        ("max-update-norm=-2.0", "error: run-config key 'max-update-norm': value -2.0 is out of range"),
        (f"output-dir='{a_file / 'runs'}'", f"error: run-config key 'output-dir': cannot write to {a_file / 'runs'}"),
        (
            f"output-dir='{run_dir.parent}' run-name='study'",
            f"error: run-config key 'run-name': {run_dir} already holds a run",
        ),
        ("resume='relative/run'", "error: run-config key 'resume': 'relative/run' must be an absolute path"),
        (f"resume='{tmp / 'nowhere'}'", f"error: run-config key 'resume': {tmp / 'nowhere'} is not a run folder"),
        (
            f"resume='{run_dir}' num-server-rounds=3 model='segresnet'",
            "error: run-config key 'model': 'segresnet' differs from 'unet' in the run being resumed",
        ),
        (f"resume='{run_dir}' num-server-rounds=1", "error: run-config key 'num-server-rounds': the run in"),
    ]


def _simulate_module():
    """scripts/simulate.py, for the check it runs before starting Flower (in-process: no start-up cost)."""
    spec = importlib.util.spec_from_file_location("simulate_script", REPO / "scripts" / "simulate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_run_config_and_folders_are_one_line_and_leave_results_intact(finished_run, tmp_path, capsys):
    run_dir, before = finished_run
    simulate = _simulate_module().main
    for overrides, expected in _cases(run_dir, tmp_path):
        code = simulate(["--run-config", overrides])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and not captured.out, (overrides, code, captured)
        assert lines[0].startswith(expected), (overrides, lines[0])
        assert _snapshot(run_dir) == before, f"{overrides} changed the existing run folder"


@pytest.mark.parametrize("command", ["centralized", "local"])
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ("num-server-round=2", "error: unknown run-config key 'num-server-round' (did you mean 'num-server-rounds'?)"),
        ("fault-injection='site-1:explode@1'", "error: run-config key 'fault-injection': 'site-1:explode@1': fault"),
        ("collaborator-selection='best-sites'", "error: run-config key 'collaborator-selection': 'best-sites' is not"),
    ],
)
def test_a_baseline_refuses_a_bad_run_config_in_one_line(command, overrides, expected, tmp_path):
    result = CliRunner().invoke(app, [command, "--run-config", overrides, "--sites", "2", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith(expected), result.output


def test_a_baseline_names_an_app_folder_without_a_flower_config(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'not-an-app'\n")
    result = CliRunner().invoke(app, ["centralized", "--app-dir", str(tmp_path), "--sites", "2", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {tmp_path / 'pyproject.toml'}: no readable [tool.flwr.app.config]")


def test_a_baseline_reads_the_current_folder_when_it_is_a_flower_app(tmp_path, monkeypatch):
    """Without --app-dir, the current folder's app config is the base, as for `flwr run .`."""
    table = {**shipped_config(), "model": "vnet"}  # only this app's table holds the bad value
    lines = [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    (tmp_path / "pyproject.toml").write_text("[tool.flwr.app.config]\n" + "\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["local", "--sites", "2", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: run-config key 'model': 'vnet' is not one of"), result.output


def test_simulate_exits_2_with_one_line_before_starting_anything(finished_run):
    run_dir, before = finished_run
    line = simulate_refuses(f"output-dir='{run_dir.parent}' run-name='study'")
    assert line.startswith(f"error: run-config key 'run-name': {run_dir} already holds a run")
    assert _snapshot(run_dir) == before


def test_resume_of_a_folder_without_a_completed_round_is_refused(finished_run):
    run_dir, before = finished_run
    (run_dir / RESUME_FILE).rename(run_dir.parent / "elsewhere.pt")
    config = load_run_config({**shipped_config(), "resume": str(run_dir), "num-server-rounds": 3})
    with pytest.raises(ConfigError, match=f"'resume': {run_dir} has no {RESUME_FILE}"):
        preflight(config)
    (run_dir / RESUME_FILE).write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=f"{run_dir / RESUME_FILE} is not a readable resume state"):
        preflight(config)


def test_a_key_missing_from_the_app_config_is_named():
    shipped = RunConfig().to_run_config()
    require_every_key(shipped)
    del shipped["round-timeout-s"]
    with pytest.raises(ConfigError, match=r"key 'round-timeout-s' is missing from \[tool.flwr.app.config\]"):
        require_every_key(shipped)


def test_the_shipped_pyproject_holds_every_key():
    require_every_key(shipped_config())


def test_every_run_folder_write_is_atomic(tmp_path):
    """Whole-file writes go to a temporary name first: a crash can never leave half a file under the real name."""
    writer = RunWriter(tmp_path / "run")
    writer.write_summary({"a": 1})
    writer.write_json("data_manifests.json", {"site-1": {"sha256": "0" * 64}})
    assert sorted(p.name for p in writer.run_dir.iterdir()) == ["data_manifests.json", "summary.json"]
    assert json.loads((writer.run_dir / "summary.json").read_text()) == {"a": 1}


# ----------------------------------------------------------------------------- certificates (issue 5)


def _certificate_is_a_key(tmp_path: Path) -> tuple[list[str], Path]:
    from fedtumor.security.certs import make_superlink_certificates

    files = make_superlink_certificates(tmp_path / "certs", ["localhost"])
    return ["cert-info", str(files.ca_key)], files.ca_key  # the private key handed over as a certificate


def _certificate_missing(tmp_path: Path) -> tuple[list[str], Path]:
    path = tmp_path / "no-such-dir" / "ca.crt"
    return ["cert-info", str(path)], path


def _certs_out_is_a_file(tmp_path: Path) -> tuple[list[str], Path]:
    path = tmp_path / "certs.txt"
    path.write_text("keep me")
    return ["certs", "--out", str(path), "--host", "localhost"], path


def _certs_out_holds_a_ca(tmp_path: Path) -> tuple[list[str], Path]:
    from fedtumor.security.certs import make_superlink_certificates

    files = make_superlink_certificates(tmp_path / "certs", ["localhost"])
    return ["certs", "--out", str(files.ca_cert.parent), "--host", "localhost"], files.ca_cert


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_certificate_is_a_key, "not a PEM certificate"),
        (_certificate_missing, "does not exist"),
        (_certs_out_is_a_file, "is not a folder"),
        (_certs_out_holds_a_ca, "already exists"),
    ],
)
def test_malformed_certificate_path_is_one_line_naming_the_path(tmp_path, make, words):
    args, culprit = make(tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert words in result.output and str(culprit) in result.output
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
