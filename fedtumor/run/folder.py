"""Where a run writes, checked before anything starts: never over an existing run, never half-way.

A new run gets ``<output-dir>/<run-name>``; the folder must not hold a run already (a
second run with the same ``run-name`` is refused, naming the folder, unless it is resumed
with ``resume``). The output folder must be creatable and writable. The ServerApp and
``scripts/simulate.py`` both call :func:`preflight`, so a bad folder fails in one line
before Flower starts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fedtumor.core.config import RunConfig, resolve_output_dir
from fedtumor.core.errors import ConfigError
from fedtumor.run.files import RUN_MARKER_FILES


def check_writable(directory: Path, key: str) -> None:
    """Create ``directory`` if needed and prove a file can be written there (then removed)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".fedtumor-write-test-", dir=directory)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"run-config key '{key}': cannot write to {directory} ({reason})") from None


def files_of_a_run(run_dir: Path) -> list[str]:
    """The run files ``run_dir`` already holds; any one means its run name is taken."""
    return [name for name in RUN_MARKER_FILES if (Path(run_dir) / name).exists()]


def check_new_run_dir(run_dir: Path) -> None:
    taken = files_of_a_run(run_dir)
    if taken:
        raise ConfigError(
            f"run-config key 'run-name': {run_dir} already holds a run ({', '.join(taken)}); "
            f"choose another run-name, or set resume='{run_dir}' to continue it"
        )


def run_dir_for(config: RunConfig, default_name: str) -> Path:
    """The folder this run writes: the resumed run's, or a new ``<output-dir>/<run-name>``."""
    if config.resume:
        run_dir = Path(config.resume).expanduser()
        check_writable(run_dir, "resume")
        return run_dir
    output_dir = resolve_output_dir(config)
    check_writable(output_dir, "output-dir")
    run_dir = output_dir / (config.run_name or default_name)
    check_new_run_dir(run_dir)
    return run_dir


def preflight(config: RunConfig) -> None:
    """Every check on folders that can be made before the run starts; ConfigError naming the key."""
    from fedtumor.run.resume import check_resume  # resume imports torch; keep plain config checks light

    if config.resume:
        check_resume(config)
        check_writable(Path(config.resume).expanduser(), "resume")
        return
    output_dir = resolve_output_dir(config)
    check_writable(output_dir, "output-dir")
    if config.run_name:
        check_new_run_dir(output_dir / config.run_name)
