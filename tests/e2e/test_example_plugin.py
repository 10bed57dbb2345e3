"""The example third-party plugin, installed like any other: listed, conformant, and run in a real federation.

The plugin is pip-installed (editable, no dependencies) into this test environment for the
module and uninstalled afterwards; entry points are read fresh, so everything that must see
it runs in a new process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import pytest

from tests import REPO
from tests.e2e.simulation import TINY_MODEL, output_of, simulate

EXAMPLE = REPO / "examples" / "fedtumor-example-plugin"
DISTRIBUTION = "fedtumor-example-plugin"
NAME = "fedavg-norm-clipped"


def pip(*args: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]


def is_installed() -> bool:
    try:
        distribution(DISTRIBUTION)
    except PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def installed():
    """Install the example for this module; leave the environment as found."""
    was_installed = is_installed()
    if not was_installed:
        pip("install", "-q", "--no-deps", "--no-build-isolation", "-e", str(EXAMPLE))
    yield
    if not was_installed:
        pip("uninstall", "-q", "-y", DISTRIBUTION)


def fedtumor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a new process, which reads the entry points afresh."""
    return subprocess.run(
        [sys.executable, "-c", "from fedtumor.cli import app; app()", *args],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_strategies_list_shows_the_plugin(installed):
    listed = fedtumor("strategies", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if NAME in line)
    assert "clipped to a maximum L2 norm" in row and "max-update-norm=10.0" in row
    assert "failed to load" not in listed.stderr


def test_plugin_passes_the_conformance_kit(installed):
    checked = fedtumor("strategies", "check", NAME)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{NAME}: conforms" in checked.stdout
    # It declares that clipping can change identical updates, so that one check is skipped.
    assert "preserves_identical_updates = False" in checked.stdout


def test_the_example_own_tests_pass(installed):
    """Its clipping arithmetic, checked by hand, and assert_conforms, as a plugin author would run them."""
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert "5 passed" in completed.stdout


@pytest.mark.e2e
@pytest.mark.slow  # CI's time; the plugin's kit and listing run in CI, its federation is any strategy's
def test_plugin_runs_a_real_two_round_federation(installed, tmp_path, two_site_cohort):
    run_config = (
        f"strategy='{NAME}' strategy-config='max-update-norm=1.0' num-server-rounds=2 data-dir='{two_site_cohort}' "
        f"output-dir='{tmp_path / 'runs'}' run-name='plugin' {TINY_MODEL}"
    )
    completed = simulate(2, run_config, tmp_path / "home", tmp_path / "flwr-home")
    assert completed.returncode == 0, output_of(completed)
    summary = json.loads((tmp_path / "runs" / "plugin" / "summary.json").read_text())
    assert summary["strategy"] == NAME
    assert summary["strategy_parameters"] == {"max-update-norm": 1.0}
    assert summary["rounds"] == 2 and set(summary["sites"]) == {"site-1", "site-2"}
    assert summary["failed_replies"] == []  # clipped float32 updates pass the reply checks
    # Each round's aggregated train metrics (logged by Flower): the sites' updates (norm about 3
    # after a few Adam steps of this tiny U-Net) were longer than 1.0, so clipping did act.
    clipped = re.findall(r"'clipped-fraction': ([0-9.e+-]+)", completed.stdout)
    norms = re.findall(r"'update-norm-max': ([0-9.e+-]+)", completed.stdout)
    assert len(norms) >= 2 and all(float(n) > 1.0 for n in norms)
    assert len(clipped) >= 2 and all(float(c) > 0 for c in clipped)
