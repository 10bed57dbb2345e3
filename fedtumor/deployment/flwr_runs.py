"""Submitting a run with the `flwr` CLI and judging it by its status, not by an exit code.

`flwr run --stream` exits 0 even when the run failed, and Flower 1.41 answers an unknown
run-config key with only "Invalid run configuration". So a run config is checked here
first (one line naming the key), and a run's outcome is its status from `flwr ls`.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from fedtumor.deployment.app_stage import staged_app

RUN_ID_PATTERN = re.compile(r"run (?:with id |id[: ]+)?(\d{6,})", re.IGNORECASE)
SUCCESS_STATUS = "finished:completed"


def validate_run_config(overrides: str, app_dir: Path) -> str | None:
    """Check the app's shipped config plus overrides; a one-line error naming the key, or None.

    ``app_dir`` is the Flower app folder that `flwr run` would submit (its pyproject.toml).
    """
    from fedtumor.core.config import read_run_config
    from fedtumor.core.errors import ConfigError
    from fedtumor.federation.privacy import dp_enabled, with_client_level_dp
    from fedtumor.federation.registry import build_strategy, load_registry, parse_strategy_config
    from fedtumor.federation.settings import check_federation_keys
    from fedtumor.run.folder import preflight

    try:
        config = check_federation_keys(read_run_config(overrides, app_dir))
        preflight(config)  # issue 6: output folder writable, run name free, resume folder matching
        parse_strategy_config(load_registry().get(config.strategy), config.strategy_config)
        if dp_enabled(config):  # refuses a strategy that cannot carry client-level DP
            with_client_level_dp(build_strategy(config), config)
    except ConfigError as exc:
        return str(exc)
    return None


def run_status(run_id: str, connection: str, env: Mapping[str, str], cwd: Path | None = None) -> str:
    """The run's status as the SuperLink reports it, e.g. ``finished:completed`` or ``running``."""
    out = subprocess.run(
        ["flwr", "ls", connection, "--run-id", run_id, "--format", "json"],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        runs = json.loads(out.stdout).get("runs", [])
    except json.JSONDecodeError:
        return f"unknown (flwr ls printed: {out.stdout.strip()[:200]} {out.stderr.strip()[:200]})"
    return runs[0].get("status", "unknown") if runs else "unknown (run not listed)"


def wait_for_run(
    run_id: str,
    connection: str,
    env: Mapping[str, str],
    timeout_s: float,
    poll_s: float = 3.0,
    cwd: Path | None = None,
) -> str:
    """Poll until the run's status starts with ``finished``; the last status seen on timeout."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while time.monotonic() < deadline:
        status = run_status(run_id, connection, env, cwd)
        if status.startswith("finished"):
            return status
        time.sleep(poll_s)
    return f"{status} (still not finished after {timeout_s:.0f}s)"


def stream_run(
    connection: str,
    env: Mapping[str, str],
    run_config: str = "",
    extra_args: list[str] = (),
    *,
    app_dir: Path,
    echo: Callable[[str], None] = print,
) -> str | None:
    """``flwr run APP_DIR --stream``, each line passed to ``echo``; the run id, or None if none was printed.

    Flower builds the FAB from a staged copy of the app's files (:func:`staged_app`: the same FAB).
    """
    run_id = None
    with (
        staged_app(app_dir) as bundle,
        subprocess.Popen(
            ["flwr", "run", str(bundle), connection, "--stream", *extra_args, *_run_config_args(run_config)],
            cwd=app_dir,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        ) as proc,
    ):
        try:
            for line in proc.stdout:
                echo(line.rstrip("\n"))
                if run_id is None and (match := RUN_ID_PATTERN.search(line)):
                    run_id = match.group(1)
        except BaseException:
            proc.kill()  # on Ctrl-C, do not wait for a log stream that only ends with the run
            raise
    return run_id


def _run_config_args(run_config: str) -> list[str]:
    return ["--run-config", run_config] if run_config else []


def submit_run(connection: str, env: Mapping[str, str], run_config: str = "", *, app_dir: Path) -> str | None:
    """``flwr run APP_DIR`` without streaming: submit the run and return its id (None if none was printed)."""
    with staged_app(app_dir) as bundle:
        command = ["flwr", "run", str(bundle), connection, *_run_config_args(run_config)]
        out = subprocess.run(command, cwd=app_dir, env=dict(env), capture_output=True, text=True, timeout=300)
    match = RUN_ID_PATTERN.search(out.stdout + out.stderr)
    return match.group(1) if match else None


def stop_run(run_id: str, connection: str, env: Mapping[str, str], cwd: Path | None = None) -> bool:
    """``flwr stop RUN_ID``: e.g. the run a killed SuperLink left ``running`` in its state database."""
    out = subprocess.run(
        ["flwr", "stop", run_id, connection], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=60
    )
    return out.returncode == 0
