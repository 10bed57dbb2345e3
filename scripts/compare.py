#!/usr/bin/env python
"""Federated versus pooled versus local-only training on one non-IID synthetic cohort.

Runs, for every seed: the pooled-data model (`fedtumor centralized`, the upper bound), one
local-only model per site (`fedtumor local`), a real Flower simulation (`scripts/simulate.py`)
per federated strategy and FedAvg-FT (`fedtumor fine-tune`), all with the same model,
patches, rounds x local epochs and held-out test set; every method stops when its validation
mean Dice stops improving (`--patience`), up to `--rounds`. Writes, under --out:

- comparison.md / comparison.csv / comparison.json: held-out Dice and HD95 per region (mean
  and 95% bootstrap interval over seeds and test subjects), the ratio to pooled, the gain over
  the mean local model, stop rounds, patches, wall time; the paired comparisons of the best
  federated method; the personalised scores (FedBN, Ditto, FedAvg-FT);
- dice_per_round.png: mean Dice versus round for every method (on validation when methods stop on it);
- cross_site_<method>.png: the first seed's cross-site heatmaps;
- runs/<method>-seed<k>/: each run's own results folder; logs/: each simulation's output.

Completed runs (a summary.json) are reused, so an interrupted study picks up where it stopped.
A profile sets every size at once; a flag given on the command line replaces its value.

    python scripts/compare.py --out outputs/compare                       # the CPU study (--profile cpu)
    python scripts/compare.py --out /tmp/compare-ci --profile reduced     # the CI-sized version
    python scripts/compare.py --out outputs/compare-gpu --profile gpu     # 1 mm, 128^3, fets-resunet, CUDA
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

# Why the CPU study has this size (docs/benchmarks.md): 8 sites x 3 seeds x 11 methods to their plateau must
# fit 90 minutes on 2 cores. 64^3 volumes at 3 mm, 32^3 patches and a 4-filter U-Net make a round about
# 6 s, so a federation reaches its plateau (15-25 rounds) in about 2-3 minutes; two local epochs per round
# halve the rounds, whose fixed costs (validation, Flower's messages) dominate at this size. Methods stop on
# validation, so the held-out set is scored once, on each final model (server-eval-every=0).
CPU = {
    "sites": 8,
    "subjects": 48,
    "test_subjects": 16,
    "seeds": [0, 1, 2],
    "methods": list(FEDERATED_METHODS),
    "rounds": 30,
    "patience": 4,
    "min_delta": 0.002,
    "fine_tune_epochs": 2,
    "geometry": "cube",
    "num_gpus": 0.0,
    "run_config": "patch-size=32 samples-per-volume=4 base-filters=4 local-epochs=2",
    # SCAFFOLD's plain-SGD steps (the optimiser it is derived for) need their own rate (docs/benchmarks.md).
    # FedAdam's server rate: at its default 0.01 it still climbed at round 30; 0.05 levels off by round 10.
    "method_run_config": {"scaffold": "learning-rate=0.3", "fedadam": "strategy-config='eta=0.05'"},
}
PROFILES = {
    "cpu": CPU,
    # Every stage (cohort, pooled, local, real simulations, early stopping, FedAvg-FT, tables, plot) in a CI job.
    "reduced": {
        **CPU,
        "sites": 2,
        "subjects": 8,
        "test_subjects": 2,
        "seeds": [0],
        "methods": ["fedavg"],
        "rounds": 2,
        "patience": 1,
        "fine_tune_epochs": 1,
        "run_config": "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=4",
    },
    # The same study at realistic size on a CUDA machine: the BraTS grid at 1 mm, 128^3 patches, the FeTS
    # reference network (presets/brats-1mm.toml); four ClientApps share each GPU.
    "gpu": {
        **CPU,
        "subjects": 96,
        "test_subjects": 24,
        "rounds": 100,
        "geometry": "brats",
        "num_gpus": 0.25,
        "fine_tune_epochs": 2,
        "run_config": (
            "spacing-mm=1.0 patch-size=128 model='fets-resunet' base-filters=32 learning-rate=5e-5 batch-size=1 "
            "samples-per-volume=2 queue-length=8 local-epochs=1 device='cuda' torch-threads=0"
        ),
        "method_run_config": {"scaffold": "learning-rate=0.01 momentum=0.9"},
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="study folder (cohort, runs, tables, plot)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="the sizes below (default cpu)")
    parser.add_argument("--sites", type=int, help="sites of the synthetic cohort")
    parser.add_argument("--subjects", type=int, help="training subjects over all sites")
    parser.add_argument("--test-subjects", type=int, help="held-out test subjects")
    parser.add_argument("--cohort-seed", type=int, default=0, help="seed of the synthetic cohort (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds")
    parser.add_argument("--methods", nargs="+", help="federated strategies (FedAvg-FT follows fedavg)")
    parser.add_argument("--rounds", type=int, help="num-server-rounds: the cap when early stopping is on")
    parser.add_argument("--patience", type=int, help="rounds without a validation gain before a method stops; 0 off")
    parser.add_argument("--min-delta", type=float, help="the smallest mean Dice gain that counts")
    parser.add_argument("--fine-tune-epochs", type=int, help="FedAvg-FT's local epochs; 0 skips it")
    parser.add_argument("--run-config", help="run-config overrides for every method (replace the profile's)")
    parser.add_argument("--no-baselines", action="store_true", help="skip pooled and local (not recommended)")
    parser.add_argument(
        "--local-every-round", action="store_true", help="score local models every round (default: round 0 and last)"
    )
    args = parser.parse_args(argv)
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key, None) is None:
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
        patience=args.patience,
        min_delta=args.min_delta,
        fine_tune_epochs=args.fine_tune_epochs,
        geometry=args.geometry,
        num_gpus=args.num_gpus,
        method_run_config=dict(args.method_run_config),
    )


TERMINAL_COLUMNS = ("method", "stop round", "mean Dice", "/ pooled", "gain over mean local", "wall s")


def print_table(rows: list[dict], console: Console) -> None:
    """The table's main columns (comparison.md has them all)."""
    table = Table(title="Held-out test set, final model (* stopped early)")
    shown = [HEADERS.index(name) for name in TERMINAL_COLUMNS]
    for index in shown:
        table.add_column(HEADERS[index], justify="left" if index == 0 else "right")
    for row in rows:
        cells = display_row(row)
        table.add_row(*(cells[index] for index in shown))
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
