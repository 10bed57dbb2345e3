#!/usr/bin/env python
"""Where a deployed SuperNode's fixed cost per message goes: a live federation, then its parts.

In Flower 1.41 a SuperNode starts a fresh ``flwr-clientapp`` process for every message. This
benchmark measures, in one invocation:

1. **live**: ``scripts/local_federation.sh`` (a SuperLink and 2 SuperNodes on 127.0.0.1, TLS,
   node authentication) for ``--rounds`` rounds of a tiny model, training messages only. The
   two sites' messages run side by side, so a round's fixed cost per message is its wall time
   (``round_wall_s``, timed in the ServerApp) minus the slower site's own training seconds;
2. **its parts**, each in a fresh ``python`` process of this venv, best of ``--repeats``:
   the interpreter (``python -c pass``), ``import torch`` (the target's yardstick),
   the ``flwr-clientapp`` command's own imports (``flwr.supernode.cli.flwr_clientapp``),
   ``import client_app.app`` (the app and all it imports), and loading the site's data from
   its warm preprocessed cache (timed inside that process).

The target: the live fixed cost per message at most 1.5x ``import torch``.

    python scripts/bench_messages.py --out docs/bench --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from fedtumor.bench.flower_baseline import site_training_seconds
from fedtumor.bench.probe import serverapp_round_seconds
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


def live_fixed_cost(rounds: int, root: Path, env: dict[str, str]) -> tuple[list[float], Path]:
    """Per round after the first, the ServerApp's round wall time minus the slower site's training."""
    workdir = root / "work"
    command = [
        "bash", str(REPO / "scripts" / "local_federation.sh"), "--sites", "2", "--rounds", str(rounds),
        "--subjects", "6", "--out", str(root / "runs"), "--run-name", "messages", "--workdir", str(workdir),
        "--run-config", TINY, "--keep",
    ]  # fmt: skip
    with (root / "live.log").open("w") as log:
        subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    run_dir = root / "runs" / "messages"
    rounds_s = serverapp_round_seconds(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary.get("status") != "completed":
        raise RuntimeError(f"the live run did not complete; see {root / 'live.log'}")
    slowest = site_training_seconds(run_dir, combine="max")  # the two sites train side by side
    return [rounds_s[r] - slowest[r] for r in sorted(rounds_s) if r >= 2], workdir


def main() -> int:
    args = parse_args()
    console = Console()
    before = machine()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fedtumor-bench-messages-"))
    env = {**os.environ, "FEDTUMOR_HOME": str(root / "home")}
    console.print(f"live federation: 2 sites, {args.rounds} rounds (work in {root})")
    fixed, workdir = live_fixed_cost(args.rounds, root, env)
    site_dir = workdir / "sites" / "site-1"
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
        [sys.executable, "-c", SITE_LOAD, TINY, str(REPO), str(site_dir)],
        cwd=REPO, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    parts["site data from the warm cache (in-process)"] = float(load.stdout.strip().splitlines()[-1])
    per_message = statistics.median(fixed)
    torch_s = parts["import torch"]
    result = {
        "live_fixed_cost_per_message_s": fixed,
        "median_fixed_cost_per_message_s": per_message,
        "parts_s": parts,
        "ratio_to_import_torch": per_message / torch_s,
        "target_ratio": TARGET_RATIO,
        "met": per_message / torch_s <= TARGET_RATIO,
    }
    rows = [[name, seconds, seconds / per_message] for name, seconds in parts.items()]
    rows.append(["live fixed cost per message (median)", per_message, 1.0])
    headers = ["part", "s", "share of the live cost"]
    print_table(console, "Per-message fixed cost of a deployed SuperNode and its parts", headers, rows)
    console.print(f"ratio to import torch: {result['ratio_to_import_torch']:.2f} (target <= {TARGET_RATIO})")
    (out / "bench_messages.md").write_text(markdown_table(headers, rows))
    write_record(out / "bench_messages.json", "messages", {**vars(args), "out": str(out)}, result, before)
    console.print(f"wrote {out / 'bench_messages.json'} and bench_messages.md")
    shutil.rmtree(root, ignore_errors=True)  # kept only when the run failed, for its logs
    return 0


if __name__ == "__main__":
    sys.exit(main())
