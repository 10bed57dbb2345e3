"""Runs ``scripts/simulate.py`` the way a user does: a real SuperLink, real Ray-simulated sites."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests import REPO

TINY_MODEL = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4"


def simulate_command(num_sites: int, run_config: str, flwr_home: Path | None = None, *extra: str) -> list[str]:
    command = [sys.executable, "scripts/simulate.py", "--num-supernodes", str(num_sites), "--run-config", run_config]
    if flwr_home is not None:
        command += ["--flwr-home", str(flwr_home)]
    return [*command, *extra]


def simulate(
    num_sites: int,
    run_config: str,
    fedtumor_home: Path,
    flwr_home: Path | None = None,
    *extra: str,
    timeout: float = 900,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """The finished simulation (stdout and stderr captured); the run folder is the run config's."""
    return subprocess.run(
        simulate_command(num_sites, run_config, flwr_home, *extra),
        cwd=REPO,
        env={**(env or os.environ), "FEDTUMOR_HOME": str(fedtumor_home)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def output_of(completed: subprocess.CompletedProcess) -> str:
    """The end of a finished command's output, for an assertion message."""
    return f"{completed.stdout[-6000:]}\n{completed.stderr[-6000:]}"
