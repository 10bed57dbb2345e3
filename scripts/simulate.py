#!/usr/bin/env python
"""Run `flwr run .` as a Ray simulation on a private local SuperLink, and clean up after it.

Flower's `local` connection starts a detached SuperLink on fixed ports and leaves it
running, and `flwr run --stream` exits 0 even when the run failed. This wrapper gives the
run its own FLWR_HOME and free ports, disables the runtime `uv sync` (it would download a
CUDA torch), reads the run's final status with `flwr ls`, and stops every process it
started, also on failure or Ctrl-C.

    python scripts/simulate.py --num-supernodes 4 --run-config "num-server-rounds=2"
    python scripts/simulate.py --num-supernodes 2 --run-config presets/brats-1mm.toml
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedtumor.deployment.simulation import main as simulation_main

REPO = Path(__file__).resolve().parent.parent  # the Flower app this checkout is


def main(argv: list[str] | None = None) -> int:
    return simulation_main(argv, app_dir=REPO, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
