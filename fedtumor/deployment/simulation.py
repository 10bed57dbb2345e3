"""Run `flwr run APP_DIR` as a Ray simulation on a private local SuperLink, and clean up after it.

Flower's `local` connection starts a detached SuperLink on fixed ports and leaves it
running, and `flwr run --stream` exits 0 even when the run failed. This runner gives the
run its own FLWR_HOME and free ports, disables the runtime `uv sync` (it would download a
CUDA torch), reads the run's final status with `flwr ls`, and stops every process it
started, also on failure, Ctrl-C, SIGTERM (``timeout``) or SIGHUP (a closed terminal).

    python scripts/simulate.py --num-supernodes 4 --run-config "num-server-rounds=2"
    python -m fedtumor.deployment.simulation --app-dir PATH --num-supernodes 4
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
from fedtumor.deployment.processes import (
    command_lines,
    descendants,
    free_port,
    is_alive,
    signal_all,
    with_venv_tools,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
STATUS_PREFIX = "simulate: run"  # "simulate: run <id> status <status> after <s>s"; benchmarks parse it


def _echo(line: str) -> None:
    print(line, flush=True)


def write_flwr_config(flwr_home: Path) -> None:
    """A `local` connection whose SuperLink keeps its state in memory (nothing left behind)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local-in-memory:"\n'
    )


def stop_superlink(control_port: int, grace_s: float = 15.0) -> None:
    """Stop the SuperLink and everything it started (SuperExec, ServerApp, Ray, ClientApps).

    Its process group and every descendant, Flower's detached helpers included (they name their
    parent with ``--parent-pid``): SIGTERM, then SIGKILL what is left after ``grace_s``.
    """
    for pid in command_lines("flower-superlink", f"127.0.0.1:{control_port}"):
        tree = [pid, *descendants(pid)]
        try:
            os.killpg(os.getpgid(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
        signal_all(tree, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(is_alive(p) for p in tree):
            time.sleep(0.2)
        signal_all([p for p in tree if is_alive(p)], signal.SIGKILL)


def _interrupt(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def interrupt_on_termination_signals() -> None:
    """SIGTERM (``timeout``, systemd) and SIGHUP (a closed terminal) clean up as Ctrl-C does.

    SIGINT is set too: a process started with it ignored (``nohup``, some CI runners) keeps it ignored.
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)


def simulate(
    app_dir: Path,
    num_supernodes: int,
    run_config: str,
    num_cpus: int,
    num_gpus: float,
    flwr_home: Path | None,
    ray_address: str | None = None,
    check_config: bool = True,
) -> int:
    """Simulate the Flower app in ``app_dir``: 0 when the run finished completed, 1 when not, 2 for bad input.

    ``run_config`` is overrides (``"num-server-rounds=2"``) or, as for ``flwr run``, one TOML file
    (``presets/brats-1mm.toml``), relative to the current folder. ``check_config`` checks it against
    fedtumor's keys first; off for an app that is not fedtumor's (the benchmarks' bare Flower app).
    """
    if run_config.strip().endswith(".toml"):
        # `flwr run` runs in app_dir: hand it the file's absolute path.
        preset = Path(run_config.strip()).expanduser().resolve()
        if not preset.is_file():
            print(f"error: --run-config file {preset} not found", file=sys.stderr)
            return EXIT_BAD_INPUT
        run_config = str(preset)
    if check_config and (problem := validate_run_config(run_config, app_dir)):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
    env = with_venv_tools(env)
    federation = (
        f"num-supernodes={num_supernodes} client-resources-num-cpus={num_cpus} "
        f"client-resources-num-gpus={float(num_gpus)}"
    )
    started = time.perf_counter()
    try:
        run_id = stream_run("local", env, run_config, ["--federation-config", federation], app_dir=app_dir, echo=_echo)
        if run_id is None:
            print("simulate: could not find the run id in `flwr run`'s output", file=sys.stderr)
            return EXIT_FAILED
        status = run_status(run_id, "local", env, cwd=app_dir)
        wall = time.perf_counter() - started
        print(f"{STATUS_PREFIX} {run_id} status {status} after {wall:.1f}s")
        return EXIT_OK if status == SUCCESS_STATUS else EXIT_FAILED
    finally:
        stop_superlink(control_port)
        if flwr_home is None:
            shutil.rmtree(home, ignore_errors=True)


def build_parser(description: str, app_dir: Path | None) -> argparse.ArgumentParser:
    """The simulation's options; ``--app-dir`` only when the caller does not fix the app folder."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-supernodes", type=int, default=4, help="simulated sites (default 4)")
    parser.add_argument(
        "--run-config",
        default="",
        help='overrides, e.g. "num-server-rounds=2 local-epochs=1", or one TOML file, e.g. presets/brats-1mm.toml',
    )
    parser.add_argument("--num-cpus", type=int, default=1, help="CPUs per simulated ClientApp")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPU fraction per simulated ClientApp")
    parser.add_argument("--flwr-home", type=Path, default=None, help="keep Flower's state here (default: temp)")
    parser.add_argument(
        "--ray-address", default=None, help="attach to this running Ray cluster (host:port of `ray start --head`)"
    )
    if app_dir is None:
        parser.add_argument(
            "--app-dir", type=Path, default=Path("."), help="the Flower app folder to run (default: the current one)"
        )
        parser.add_argument(
            "--no-config-check", action="store_true", help="the app is not fedtumor's: skip the run-config check"
        )
    return parser


def main(argv: list[str] | None = None, app_dir: Path | None = None, description: str = __doc__) -> int:
    """Command line: ``app_dir`` fixes the app folder (scripts/simulate.py passes its checkout)."""
    args = build_parser(description, app_dir).parse_args(argv)
    folder = (app_dir if app_dir is not None else args.app_dir).expanduser().resolve()
    interrupt_on_termination_signals()
    try:
        return simulate(
            folder,
            args.num_supernodes,
            args.run_config,
            args.num_cpus,
            args.num_gpus,
            args.flwr_home,
            args.ray_address,
            check_config=not getattr(args, "no_config_check", False),
        )
    except KeyboardInterrupt:  # simulate's clean-up has run by now
        print("simulate: interrupted; every process it started is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


def simulation_command(app_dir: Path) -> list[str]:
    """The command that runs a simulation of ``app_dir`` in a new process (add the options above)."""
    return [sys.executable, "-m", "fedtumor.deployment.simulation", "--app-dir", str(app_dir)]


if __name__ == "__main__":
    sys.exit(main())
