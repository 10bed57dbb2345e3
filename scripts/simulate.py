#!/usr/bin/env python
"""Run `flwr run .` as a Ray simulation on a private local SuperLink, and clean up after it.

Flower's `local` connection starts a detached SuperLink on fixed ports and leaves it
running, and `flwr run --stream` exits 0 even when the run failed. This wrapper gives the
run its own FLWR_HOME and free ports, disables the runtime `uv sync` (it would download a
CUDA torch), reads the run's final status with `flwr ls`, and stops every process it
started, also on failure or Ctrl-C.

    python scripts/simulate.py --num-supernodes 4 --run-config "num-server-rounds=2"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN_ID_PATTERN = re.compile(r"run (?:with id |id[: ]+)?(\d{6,})", re.IGNORECASE)
SUCCESS_STATUS = "finished:completed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_flwr_config(flwr_home: Path) -> None:
    """A `local` connection whose SuperLink keeps its state in memory (nothing left behind)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local-in-memory:"\n'
    )


def processes_listening_on(control_port: int) -> list[int]:
    """PIDs of the SuperLink this run started (found by its control-API address)."""
    needle = f"127.0.0.1:{control_port}"
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in cmdline and needle in cmdline:
            pids.append(int(proc.name))
    return pids


def stop_superlink(control_port: int) -> None:
    """Stop the SuperLink and everything in its session (ServerApp, Ray, ClientApps)."""
    for pid in processes_listening_on(control_port):
        try:
            pgid = os.getpgid(pid)
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.2)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def validate_run_config(overrides: str) -> str | None:
    """Check the shipped config plus overrides up front; a one-line error naming the key, or None.

    Flower itself only says "Invalid run configuration" for an unknown key.
    """
    from flwr.common.config import parse_config_args

    from fedtumor.config import load_run_config
    from fedtumor.errors import ConfigError

    with open(REPO / "pyproject.toml", "rb") as handle:
        shipped = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    from strategies.privacy import dp_enabled, with_client_level_dp
    from strategies.registry import build_strategy, load_registry, parse_strategy_config

    try:
        config = load_run_config({**shipped, **parse_config_args([overrides] if overrides else None)})
        parse_strategy_config(load_registry().get(config.strategy), config.strategy_config)
        if dp_enabled(config):  # refuses a strategy that cannot carry client-level DP
            with_client_level_dp(build_strategy(config), config)
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:  # unparsable --run-config text
        return f"cannot parse --run-config {overrides!r}: {exc}"
    return None


def run_status(run_id: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["flwr", "ls", "local", "--run-id", run_id, "--format", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        runs = json.loads(out.stdout).get("runs", [])
    except json.JSONDecodeError:
        return f"unknown (flwr ls printed: {out.stdout.strip()[:200]} {out.stderr.strip()[:200]})"
    return runs[0].get("status", "unknown") if runs else "unknown (run not listed)"


def simulate(num_supernodes: int, run_config: str, num_cpus: int, num_gpus: float, flwr_home: Path | None) -> int:
    if problem := validate_run_config(run_config):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    home = flwr_home or Path(tempfile.mkdtemp(prefix="fedtumor-flwr-home-"))
    write_flwr_config(home)
    control_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }
    # The SuperLink is started by `flwr run`; its children must find this venv's tools.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    federation = (
        f"num-supernodes={num_supernodes} client-resources-num-cpus={num_cpus} "
        f"client-resources-num-gpus={float(num_gpus)}"
    )
    command = ["flwr", "run", ".", "local", "--stream", "--federation-config", federation]
    if run_config:
        command += ["--run-config", run_config]
    started = time.perf_counter()
    run_id = None
    try:
        with subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                if run_id is None and (match := RUN_ID_PATTERN.search(line)):
                    run_id = match.group(1)
        if run_id is None:
            print("simulate: could not find the run id in `flwr run`'s output", file=sys.stderr)
            return 1
        status = run_status(run_id, env)
        wall = time.perf_counter() - started
        print(f"simulate: run {run_id} status {status} after {wall:.1f}s")
        return 0 if status == SUCCESS_STATUS else 1
    finally:
        stop_superlink(control_port)
        if flwr_home is None:
            shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-supernodes", type=int, default=4, help="simulated sites (default 4)")
    parser.add_argument("--run-config", default="", help='overrides, e.g. "num-server-rounds=2 local-epochs=1"')
    parser.add_argument("--num-cpus", type=int, default=1, help="CPUs per simulated ClientApp")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPU fraction per simulated ClientApp")
    parser.add_argument("--flwr-home", type=Path, default=None, help="keep Flower's state here (default: temp)")
    args = parser.parse_args()
    return simulate(args.num_supernodes, args.run_config, args.num_cpus, args.num_gpus, args.flwr_home)


if __name__ == "__main__":
    sys.exit(main())
