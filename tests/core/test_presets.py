"""Run-config presets (presets/*.toml): each loads through the project's reader, as `flwr run` reads it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from data_loaders.synthetic.parameters import GEOMETRIES
from fedtumor.core.config import SYNTH_GEOMETRIES, RunConfig, app_config_table, read_run_config
from fedtumor.deployment.flwr_runs import validate_run_config
from fedtumor.federation.settings import check_federation_keys
from tests import REPO

PRESETS = sorted((REPO / "presets").glob("*.toml"))


def preset_table(name: str) -> dict:
    with (REPO / "presets" / name).open("rb") as handle:
        return tomllib.load(handle)


def test_the_two_presets_are_shipped():
    assert {p.name for p in PRESETS} >= {"cpu-demo.toml", "brats-1mm.toml"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_key_is_known_valid_and_read_as_written(preset: Path):
    table = preset_table(preset.name)
    known = set(RunConfig().to_run_config())
    assert set(table) <= known, sorted(set(table) - known)
    assert all(not isinstance(v, dict) for v in table.values()), "presets are flat: Flower flattens tables"
    config = check_federation_keys(read_run_config(str(preset), app_dir=REPO))
    resolved = config.to_run_config()
    assert {key: resolved[key] for key in table} == table
    assert validate_run_config(str(preset), REPO) is None  # what scripts/simulate.py checks first


def test_cpu_demo_is_the_shipped_default():
    shipped = app_config_table(REPO)
    demo = preset_table("cpu-demo.toml")
    assert {key: shipped[key] for key in demo} == demo
    assert read_run_config(str(REPO / "presets" / "cpu-demo.toml"), app_dir=REPO) == read_run_config(app_dir=REPO)


def test_brats_preset_is_the_fets_reference_at_1_mm():
    config = read_run_config(str(REPO / "presets" / "brats-1mm.toml"), app_dir=REPO)
    assert (config.spacing_mm, config.patch_size) == (1.0, 128)
    assert (config.model, config.base_filters) == ("fets-resunet", 32)
    assert (config.learning_rate, config.batch_size, config.local_epochs) == (5e-5, 1, 1)
    assert config.synth_geometry == "brats"  # with no data-dir: the synthetic cohort on the BraTS grid


def test_a_bad_key_in_a_preset_is_one_line_naming_it(tmp_path):
    preset = tmp_path / "bad.toml"
    preset.write_text('patch-size = 128\nsynth-geometry = "sri24"\n')
    problem = validate_run_config(str(preset), REPO)
    assert problem == "run-config key 'synth-geometry': 'sri24' is not one of cube, brats"


def test_simulate_refuses_a_missing_preset_file_with_exit_code_2(tmp_path):
    missing = tmp_path / "nope.toml"
    completed = subprocess.run(
        [sys.executable, "scripts/simulate.py", "--run-config", str(missing)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines() == [f"error: --run-config file {missing} not found"]


def test_config_geometries_are_the_generators():
    assert SYNTH_GEOMETRIES == GEOMETRIES  # fedtumor.core may not import data_loaders; keep them equal here
