"""fedtumor as a user installs it: a wheel, not the checkout, run from a folder that is no Flower app.

The wheel is built from a copy of the distribution's sources and installed without its
dependencies into a fresh venv that borrows the suite's site-packages (so torch is not
installed twice), with the wheel's own packages first on its path. The baselines then run
from an empty folder outside the checkout, on the packaged run-config defaults.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from fedtumor.run.files import CONFIG_FILE, FINAL_MODEL_FILE, SUMMARY_FILE
from tests import REPO

IMPORT_PACKAGES = {"fedtumor", "server_app", "client_app", "strategies", "data_loaders"}
TINY = (
    "num-server-rounds=1 base-filters=4 patch-size=16 samples-per-volume=1 batch-size=1 queue-length=1 "
    "augment=false synth-sites=2 synth-subjects=6 synth-test-subjects=1"
)


def _run(command: list, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
    return done


def build_wheel(out: Path) -> Path:
    """A wheel of a copy of the sources: the build writes nothing into the shared checkout."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for requirement in map(Requirement, pyproject["build-system"]["requires"]):
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed), f"{requirement} but the venv has {installed}"
    source = out / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in IMPORT_PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheel_dir = out / "wheel"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir)]
    _run([*pip_wheel, "-q"], cwd=source)
    (wheel,) = wheel_dir.glob("fedtumor-*.whl")
    return wheel


def install_into_fresh_venv(wheel: Path, venv: Path) -> Path:
    """The venv's python, the wheel installed in it; the suite's packages (torch, Flower...) reached by a .pth."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    python = venv / "bin" / "python"
    pip_install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index"]
    _run([*pip_install, "-q", str(wheel)], cwd=venv.parent)
    # After the install, so pip never sees (or touches) the suite's editable fedtumor.
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(_run([python, "-c", purelib], venv).stdout.strip())
    (site_packages / "zz_suite_packages.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


@pytest.mark.e2e
def test_the_installed_wheel_runs_both_baselines_from_a_folder_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    with zipfile.ZipFile(wheel) as archive:
        top_level = {name.split("/")[0] for name in archive.namelist() if "/" in name}
    assert {name for name in top_level if not name.endswith((".dist-info", ".data"))} == IMPORT_PACKAGES

    python = install_into_fresh_venv(wheel, tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"  # no pyproject.toml: the packaged defaults
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"FEDTUMOR_HOME": str(tmp_path / "home"), "PATH": f"{python.parent}{os.pathsep}{env.get('PATH', '')}"}
    where = "import importlib, sys; print(*(importlib.import_module(name).__file__ for name in sys.argv[1:]))"
    files = _run([python, "-c", where, *sorted(IMPORT_PACKAGES)], elsewhere, env).stdout.split()
    installed = (tmp_path / "venv").resolve()
    assert all(Path(file).resolve().is_relative_to(installed) for file in files), files

    runs = tmp_path / "runs"
    fedtumor = python.parent / "fedtumor"
    for command, name in (("centralized", "pooled"), ("local", "local")):
        run_config = f"{TINY} output-dir='{runs}' run-name='{name}'"
        arguments = [command, "--run-config", run_config, "--no-progress", "--torch-threads", "2"]
        _run([fedtumor, *arguments], elsewhere, env, timeout=300)
        summary = json.loads((runs / name / SUMMARY_FILE).read_text())
        assert all(0.0 <= summary["final"][f"dice_{region}"] <= 1.0 for region in ("et", "tc", "wt")), summary
        assert summary["rounds"] == 1
        saved = json.loads((runs / name / CONFIG_FILE).read_text())
        assert saved["config"]["patch-size"] == 16 and saved["config"]["learning-rate"] == 0.01  # packaged default
    assert (runs / "pooled" / FINAL_MODEL_FILE).is_file()
    assert sorted(summary["per_site_final"]) == ["site-1", "site-2"]
    assert all((runs / "local" / site / FINAL_MODEL_FILE).is_file() for site in ("site-1", "site-2"))
