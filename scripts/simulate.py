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
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from fedtumor.deployment.flwr_runs import SUCCESS_STATUS, run_status, stream_run, validate_run_config
from fedtumor.deployment.processes import command_lines, free_port


def _echo(line: str) -> None:
    print(line, flush=True)


def write_flwr_config(flwr_home: Path) -> None:
    """A `local` connection whose SuperLink keeps its state in memory (nothing left behind)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local-in-memory:"\n'
    )


def stop_superlink(control_port: int) -> None:
    """Stop the SuperLink and everything in its session (ServerApp, Ray, ClientApps)."""
    for pid in command_lines("flower-superlink", f"127.0.0.1:{control_port}"):
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


def simulate(
    num_supernodes: int,
    run_config: str,
    num_cpus: int,
    num_gpus: float,
    flwr_home: Path | None,
    ray_address: str | None = None,
) -> int:
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
    if ray_address:
        # Flower's Ray backend calls ray.init() without an address, which attaches to RAY_ADDRESS.
        env["RAY_ADDRESS"] = ray_address
    # The SuperLink is started by `flwr run`; its children must find this venv's tools.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    federation = (
        f"num-supernodes={num_supernodes} client-resources-num-cpus={num_cpus} "
        f"client-resources-num-gpus={float(num_gpus)}"
    )
    started = time.perf_counter()
    try:
        run_id = stream_run("local", env, run_config, ["--federation-config", federation], echo=_echo)
        if run_id is None:
            print("simulate: could not find the run id in `flwr run`'s output", file=sys.stderr)
            return 1
        status = run_status(run_id, "local", env)
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
    parser.add_argument(
        "--ray-address", default=None, help="attach to this running Ray cluster (host:port of `ray start --head`)"
    )
    args = parser.parse_args()
    return simulate(
        args.num_supernodes, args.run_config, args.num_cpus, args.num_gpus, args.flwr_home, args.ray_address
    )


if __name__ == "__main__":
    sys.exit(main())
