#!/usr/bin/env python
"""Federated versus pooled versus local-only training on one non-IID synthetic cohort.

Runs, for every seed: the pooled-data model (`fedtumor centralized`, the upper bound), one
local-only model per site (`fedtumor local`) and a real Flower simulation
(`scripts/simulate.py`) per federated strategy, all with the same model, patches, rounds x
local epochs and held-out test set. Writes, under --out:

- comparison.md / comparison.csv / comparison.json: held-out Dice and HD95 per region (mean
  and standard deviation over seeds), the federated/pooled Dice ratio, the gain over the mean
  local model and the wall time of each method;
- dice_per_round.png: held-out mean Dice versus round for every method;
- runs/<method>-seed<k>/: each run's own results folder; logs/: each simulation's output.

Completed runs (a summary.json) are reused, so an interrupted study picks up where it stopped.

    python scripts/compare.py --out outputs/compare --sites 8 --seeds 0 1 --rounds 4
    python scripts/compare.py --out /tmp/compare-ci --reduced      # the CI-sized version
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedtumor.bench.compare import HEADERS, RunRecord, display_row
from fedtumor.bench.compare_study import (
    FEDERATED_METHODS,
    STUDY_FILES,
    StudyPlan,
    prepare_study,
    run_study,
    write_study_outputs,
)
from fedtumor.core.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parent.parent  # the Flower app every federated method runs

# The reduced preset: fits a CI job (about 2 minutes on 2 cores) and still runs every stage.
REDUCED = {
    "sites": 2,
    "subjects": 6,
    "test_subjects": 1,
    "seeds": [0],
    "methods": ["fedavg"],
    "rounds": 1,
    "run_config": "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=4",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="study folder (cohort, runs, tables, plot)")
    parser.add_argument("--sites", type=int, default=8, help="sites of the synthetic cohort (default 8)")
    parser.add_argument("--subjects", type=int, default=48, help="training subjects over all sites (default 48)")
    parser.add_argument("--test-subjects", type=int, default=8, help="held-out test subjects (default 8)")
    parser.add_argument("--cohort-seed", type=int, default=0, help="seed of the synthetic cohort (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    parser.add_argument("--methods", nargs="+", default=list(FEDERATED_METHODS), help="federated strategies")
    parser.add_argument("--rounds", type=int, default=4, help="num-server-rounds (default 4)")
    parser.add_argument("--run-config", default="", help="more run-config overrides for every method")
    parser.add_argument("--no-baselines", action="store_true", help="skip pooled and local (not recommended)")
    parser.add_argument(
        "--local-every-round", action="store_true", help="score local models every round (default: round 0 and last)"
    )
    parser.add_argument(
        "--reduced", action="store_true", help="CI size: " + ", ".join(f"{k}={v}" for k, v in REDUCED.items())
    )
    args = parser.parse_args(argv)
    if args.reduced:
        for key, value in REDUCED.items():
            setattr(args, key, value)
    if args.sites < 2:
        parser.error("--sites must be at least 2")
    return args


def plan_of(args: argparse.Namespace) -> StudyPlan:
    return StudyPlan(
        sites=args.sites,
        subjects=args.subjects,
        test_subjects=args.test_subjects,
        cohort_seed=args.cohort_seed,
        seeds=list(args.seeds),
        methods=list(args.methods),
        rounds=args.rounds,
        run_config=args.run_config,
        baselines=not args.no_baselines,
        local_every_round=args.local_every_round,
    )


def print_table(rows: list[dict], console: Console) -> None:
    table = Table(title="Held-out test set, final round")
    for index, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*display_row(row))
    console.print(table)


def print_record(record: RunRecord, console: Console) -> None:
    status = "reused" if record.reused else ("ok" if record.ok else f"FAILED: {record.error}")
    console.print(f"{record.method} seed {record.seed}: {status} ({record.wall_s:.0f}s)", highlight=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    started = time.perf_counter()
    load_before = os.getloadavg()
    try:
        study = prepare_study(plan_of(args), args.out, REPO)
    except (ConfigError, DataError, ValueError) as exc:
        console.print(f"error: {exc}", style="bold red", highlight=False)
        return 2
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        records = run_study(study, progress, on_record=lambda record: print_record(record, progress.console))
    command = " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else "compare.main(...)"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    rows = write_study_outputs(study, records, command, settings, started, load_before)
    if not rows:
        console.print("error: no run finished; see the logs under " + str(study.logs), style="bold red")
        return 1
    print_table(rows, console)
    console.print(f"wrote {study.out / STUDY_FILES[0]}, {', '.join(STUDY_FILES[1:])}")
    return 0 if all(r.ok for r in records) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
