#!/usr/bin/env python
"""Where a deployed SuperNode's fixed cost per message goes, with and without the node worker.

In Flower 1.41 a SuperNode starts a fresh ``flwr-clientapp`` process for every message; with
``--node-worker`` one long-lived process per node runs them (``fedtumor/deployment/node_worker.py``).
This benchmark measures, in one invocation:

1. **live, twice**: ``scripts/local_federation.sh`` (a SuperLink behind nginx and 2 SuperNodes on
   127.0.0.1, TLS, node authentication) for ``--rounds`` rounds of a tiny model, training messages
   only, first with a process per message ("before"), then with node workers ("after"). The two
   sites' messages run side by side, so a round's fixed cost is its wall time (``round_wall_s``,
   timed in the ServerApp) minus the slower site's own training seconds. That includes the
   ServerApp's round close, Flower's transport and the SuperNode's 3 s idle poll;
2. **the node's own cost per message** with the worker: from its log, claim to reply pushed
   minus the site's training seconds and minus the time it waited for the SuperNode to receive
   the message from the SuperLink (Flower's transfer, one request per array), rounds after the
   first;
3. **the parts of a fresh process**, each in a new ``python`` process of this venv, best of ``--repeats``:
   the interpreter (``python -c pass``), ``import torch`` (the target's yardstick),
   the ``flwr-clientapp`` command's own imports (``flwr.supernode.cli.flwr_clientapp``),
   ``import client_app.app`` (the app and all it imports), and loading the site's data from
   its warm preprocessed cache (timed inside that process).

The target: the fixed cost per message at most 1.5x ``import torch``.

    python scripts/bench_messages.py --out docs/bench --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from fedtumor.bench.flower_baseline import site_training_seconds
from fedtumor.bench.probe import read_metrics, serverapp_round_seconds
from fedtumor.bench.report import machine, markdown_table, print_table, write_record

REPO = Path(__file__).resolve().parent.parent
TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=2 fraction-evaluate=0.0"
SITE_LOAD = """
import sys, time
from data_loaders.site import load_site
from fedtumor.core.config import read_run_config
config = read_run_config(sys.argv[1], sys.argv[2])
node = {"data-dir": sys.argv[3], "site-id": "site-1"}
load_site(config, node)  # warms the cache if a previous process has not
started = time.perf_counter()
load_site(config, node)
print(time.perf_counter() - started)
"""
TARGET_RATIO = 1.5
TASK_LINE = re.compile(
    r"node worker: task \d+ \(train\): claimed to reply pushed ([0-9.]+) s "
    r"\(pull [0-9.]+ s, of which waiting for the SuperNode to receive it ([0-9.]+) s"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_messages.json and .md")
    parser.add_argument("--rounds", type=int, default=3, help="live rounds, at least 2 (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per part (default 3)")
    args = parser.parse_args()
    if args.rounds < 2 or args.repeats < 1:
        parser.error("--rounds must be at least 2 and --repeats at least 1")
    return args


def process_seconds(code: str, repeats: int, env: dict[str, str]) -> float:
    """Wall time of ``python -c code`` in a fresh process, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def live_run(rounds: int, root: Path, env: dict[str, str], worker: bool) -> tuple[Path, Path]:
    """One live federation; its run folder and its working folder (logs, site folders)."""
    name = "worker" if worker else "per-message"
    workdir = root / f"work-{name}"
    command = [
        "bash", str(REPO / "scripts" / "local_federation.sh"), "--sites", "2", "--rounds", str(rounds),
        "--subjects", "6", "--out", str(root / "runs"), "--run-name", name, "--workdir", str(workdir),
        "--run-config", TINY, "--keep", *(["--node-worker"] if worker else []),
    ]  # fmt: skip
    with (root / f"live-{name}.log").open("w") as log:
        subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    run_dir = root / "runs" / name
    if json.loads((run_dir / "summary.json").read_text()).get("status") != "completed":
        raise RuntimeError(f"the live run did not complete; see {root / f'live-{name}.log'}")
    return run_dir, workdir


def round_fixed_cost(run_dir: Path) -> list[float]:
    """Per round after the first, the ServerApp's round wall time minus the slower site's training."""
    rounds_s = serverapp_round_seconds(run_dir)
    slowest = site_training_seconds(run_dir, combine="max")  # the two sites train side by side
    return [rounds_s[r] - slowest[r] for r in sorted(rounds_s) if r >= 2]


def worker_cost_per_message(run_dir: Path, worker_log: Path, site: str = "site-1") -> tuple[list[float], list[float]]:
    """Per round (round 1 loads the app), from the worker's log: its own cost, claim to reply pushed minus
    the site's training and minus the wait for the SuperNode to receive the message; and that wait."""
    tasks = [(float(m.group(1)), float(m.group(2))) for m in TASK_LINE.finditer(worker_log.read_text())]
    metrics = read_metrics(run_dir)
    rows = metrics.query("scope == @site and split == 'train' and metric == 'train_seconds'")
    training = dict(zip(rows["round"].astype(int), rows["value"].astype(float), strict=True))
    own = [total - waited - training[r] for r, (total, waited) in enumerate(tasks, start=1)]
    return own, [waited for _, waited in tasks]


def main() -> int:
    args = parse_args()
    console = Console()
    before = machine()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fedtumor-bench-messages-"))
    env = {**os.environ, "FEDTUMOR_HOME": str(root / "home")}
    console.print(f"live federations: 2 sites, {args.rounds} rounds, a process per message, then workers ({root})")
    per_message_run, workdir = live_run(args.rounds, root, env, worker=False)
    worker_run, worker_workdir = live_run(args.rounds, root, env, worker=True)
    fixed = {"per-message process": round_fixed_cost(per_message_run), "node worker": round_fixed_cost(worker_run)}
    node_cost, transfer_wait = worker_cost_per_message(worker_run, worker_workdir / "logs" / "worker-site-1.log")
    console.print(f"parts: {args.repeats} fresh processes each")
    parts = {
        "interpreter (python -c pass)": process_seconds("pass", args.repeats, env),
        "import torch": process_seconds("import torch", args.repeats, env),
        "import flwr-clientapp's entry point": process_seconds(
            "import flwr.supernode.cli.flwr_clientapp", args.repeats, env
        ),
        "import client_app.app": process_seconds("import client_app.app", args.repeats, env),
    }
    load = subprocess.run(
        [sys.executable, "-c", SITE_LOAD, TINY, str(REPO), str(workdir / "sites" / "site-1")],
        cwd=REPO, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    parts["site data from the warm cache (in-process)"] = float(load.stdout.strip().splitlines()[-1])
    torch_s = parts["import torch"]
    median_fixed = {mode: statistics.median(values) for mode, values in fixed.items()}
    median_node = statistics.median(node_cost[1:])
    result = {
        "round_fixed_cost_s": fixed,
        "median_round_fixed_cost_s": median_fixed,
        "worker_node_cost_per_message_s": node_cost,
        "worker_wait_for_supernode_receive_s": transfer_wait,
        "median_worker_node_cost_per_message_s": median_node,
        "parts_s": parts,
        "ratio_to_import_torch": {
            **{f"round fixed cost, {mode}": seconds / torch_s for mode, seconds in median_fixed.items()},
            "node cost per message, node worker": median_node / torch_s,
        },
        "target_ratio": TARGET_RATIO,
        "met": median_node / torch_s <= TARGET_RATIO,
    }
    rows = [[name, seconds, seconds / torch_s] for name, seconds in parts.items()]
    rows += [[f"live round fixed cost, {mode} (median)", s, s / torch_s] for mode, s in median_fixed.items()]
    rows.append(["node worker, first message (installs and imports the app)", node_cost[0], node_cost[0] / torch_s])
    wait = statistics.median(transfer_wait[1:])
    rows.append(["node worker: waiting for the SuperNode to receive (median)", wait, wait / torch_s])
    rows.append(["node worker: its own cost per message (median)", median_node, median_node / torch_s])
    headers = ["part", "s", "x import torch"]
    title = "Fixed cost per message of a deployed SuperNode, before and after the node worker"
    print_table(console, title, headers, rows)
    console.print(f"node worker cost per message: {median_node / torch_s:.2f}x import torch (target <= {TARGET_RATIO})")
    (out / "bench_messages.md").write_text(markdown_table(headers, rows))
    write_record(out / "bench_messages.json", "messages", {**vars(args), "out": str(out)}, result, before)
    console.print(f"wrote {out / 'bench_messages.json'} and bench_messages.md")
    shutil.rmtree(root, ignore_errors=True)  # kept only when the run failed, for its logs
    return 0


if __name__ == "__main__":
    sys.exit(main())
