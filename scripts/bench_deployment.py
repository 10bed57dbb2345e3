#!/usr/bin/env python
"""Wall time of a live loopback federation next to the same run in simulation.

Both runs use the same cohort, the same run config and the same number of sites and rounds.

- **Loopback:** `scripts/local_federation.sh`. This is a SuperLink and SuperNodes as separate
  processes on 127.0.0.1, with TLS and node authentication.
- **Loopback with node workers:** the same, each SuperNode's ClientApp in one long-lived
  process (`--node-worker`, `fedtumor/deployment/node_worker.py`).
- **Simulation:** `scripts/simulate.py`, with Ray-simulated sites.

The table shows, for each mode:

- `round s`: the median round after the first, as the ServerApp timed it (`round_wall_s`);

- `run s`: from `flwr run` to the finished status, as each script reports it;
- `wall s`: the whole command, including starting and stopping every process;
- `server s`: the ServerApp's own `wall_time_s` from `summary.json`;
- each time as a ratio to simulation, measured in the same invocation.

Target: a loopback round (with node workers) at most 1.2x the same round in simulation.

    python scripts/bench_deployment.py --sites 2 --rounds 4 --json docs/bench_deployment.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedtumor.bench.probe import serverapp_round_seconds
from fedtumor.run.writer import read_summary

REPO = Path(__file__).resolve().parent.parent
TARGET_ROUND_RATIO = 1.2
RUN_SECONDS = {
    "loopback": re.compile(r"finished:completed.*?\(run ([\d.]+)s"),
    "loopback, node workers": re.compile(r"finished:completed.*?\(run ([\d.]+)s"),
    "simulation": re.compile(r"status finished:completed after ([\d.]+)s"),
}
console = Console()


def _run(mode: str, command: list[str], env: dict[str, str], run_dir: Path) -> dict:
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    output = " ".join((completed.stdout + completed.stderr).split())  # rich may wrap lines
    match = RUN_SECONDS[mode].search(output)
    if completed.returncode != 0 or match is None:
        raise SystemExit(f"error: the {mode} run failed (exit {completed.returncode}): {output[-1500:]}")
    summary = read_summary(run_dir)
    rounds = serverapp_round_seconds(run_dir)
    return {
        "mode": mode,
        "round_s": statistics.median(seconds for r, seconds in rounds.items() if r >= 2),
        "run_s": float(match.group(1)),
        "wall_s": wall,
        "server_s": summary["wall_time_s"],
        "final": summary["final"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="at least 2: round 1 is not a steady round")
    parser.add_argument("--subjects", type=int, default=12, help="training-side subjects over all sites")
    parser.add_argument("--run-config", default="", help="extra run-config overrides for both runs")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")

    from data_loaders.synthetic import generate_cohort

    work = Path(tempfile.mkdtemp(prefix="fedtumor-bench-deployment-"))
    env = {**os.environ, "FEDTUMOR_HOME": os.environ.get("FEDTUMOR_HOME", str(work / "home"))}
    # The loopback script caches its cohort under this name; simulation reads the same one.
    cohort = Path(env["FEDTUMOR_HOME"]) / "cohorts" / f"loopback-sites{args.sites}-subj{args.subjects}-test2-seed0"
    generate_cohort(cohort, n_sites=args.sites, n_subjects=args.subjects, seed=0, n_test=2)
    shared = f"num-server-rounds={args.rounds} min-available-nodes={args.sites} {args.run_config}".strip()
    results = []
    loopback = [
        "bash",
        "scripts/local_federation.sh",
        *("--sites", str(args.sites), "--rounds", str(args.rounds), "--subjects", str(args.subjects)),
        *("--out", str(work / "runs"), "--run-name", "loopback", "--run-config", args.run_config),
    ]
    loopback_env = {**env, "FEDTUMOR_PYTHON": sys.executable}
    with console.status("loopback federation (SuperLink + SuperNodes, TLS, node auth)"):
        results.append(_run("loopback", loopback, loopback_env, work / "runs" / "loopback"))
    with console.status("loopback federation with node workers"):
        workers = [*loopback[:-4], "--run-name", "workers", "--run-config", args.run_config, "--node-worker"]
        results.append(_run("loopback, node workers", workers, loopback_env, work / "runs" / "workers"))
    simulation = [
        sys.executable,
        "scripts/simulate.py",
        *("--num-supernodes", str(args.sites)),
        "--run-config",
        f"{shared} data-dir='{cohort}' output-dir='{work / 'runs'}' run-name='simulation'",
    ]
    with console.status("simulation (Ray)"):
        results.append(_run("simulation", simulation, env, work / "runs" / "simulation"))

    baseline = results[-1]
    table = Table(title=f"{args.sites} sites, {args.rounds} rounds: loopback deployment vs simulation")
    columns = ("mode", "round s", "x sim", "run s", "x sim", "wall s", "x sim", "server s", "x sim", "final Dice WT")
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right")
    for row in results:
        table.add_row(
            row["mode"],
            f"{row['round_s']:.1f}",
            f"{row['round_s'] / baseline['round_s']:.2f}",
            f"{row['run_s']:.1f}",
            f"{row['run_s'] / baseline['run_s']:.2f}",
            f"{row['wall_s']:.1f}",
            f"{row['wall_s'] / baseline['wall_s']:.2f}",
            f"{row['server_s']:.1f}",
            f"{row['server_s'] / baseline['server_s']:.2f}",
            f"{row['final']['dice_wt']:.3f}",
        )
    console.print(table)
    ratio = results[1]["round_s"] / baseline["round_s"]
    console.print(f"loopback round with node workers: {ratio:.2f}x simulation (target <= {TARGET_ROUND_RATIO})")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "load": os.getloadavg(), "results": results}, indent=2
            )
            + "\n"
        )
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
