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
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the baselines and fedtumor packages of this checkout

from data_loaders.synthetic import generate_cohort  # noqa: E402
from fedtumor.baselines.centralized import run_centralized  # noqa: E402
from fedtumor.baselines.local import run_local  # noqa: E402
from fedtumor.baselines.run_config import app_run_config  # noqa: E402
from fedtumor.core.errors import ConfigError, DataError  # noqa: E402
from fedtumor.core.metrics import mean_dice  # noqa: E402
from fedtumor.run.writer import GLOBAL_SCOPE, metric_table, read_metrics, read_summary  # noqa: E402

FEDERATED_METHODS = ("fedavg", "fedprox", "fedbn", "scaffold", "fedcostwavg", "fedpidavg")
POOLED, LOCAL = "pooled", "local"
REGIONS = ("et", "tc", "wt")
ROUND_LINE = re.compile(r"\[ROUND (\d+)")
RECEIVED_LINE = re.compile(r"aggregate_train: Received (\d+) results")

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


@dataclass
class RunRecord:
    method: str
    seed: int
    run_dir: str
    wall_s: float
    ok: bool
    reused: bool = False
    error: str = ""
    final: dict = field(default_factory=dict)
    per_site_final: dict = field(default_factory=dict)
    mean_dice_per_round: dict = field(default_factory=dict)


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


def common_run_config(args: argparse.Namespace, cohort: Path, runs: Path) -> str:
    # Site validation plays no part in the comparison; held-out test scoring does, every round.
    base = (
        f"data-dir='{cohort}' output-dir='{runs}' num-server-rounds={args.rounds} "
        f"fraction-evaluate=0.0 min-available-nodes={args.sites} server-eval=true"
    )
    return f"{base} {args.run_config}".strip()


def reusable(run_dir: Path) -> bool:
    """A finished run (summary.json present) is reused; a half-written one is removed and redone."""
    if (run_dir / "summary.json").is_file():
        return True
    if run_dir.exists():
        shutil.rmtree(run_dir)  # only this study's own run folder, left by an interrupted run
    return False


def record_of(method: str, seed: int, run_dir: Path, wall_s: float, reused: bool) -> RunRecord:
    summary = read_summary(run_dir) or {}
    test = metric_table(read_metrics(run_dir), GLOBAL_SCOPE, "test")
    per_round = {int(r): mean_dice(row) for r, row in test.iterrows()} if not test.empty else {}
    if reused:
        wall_s = float(json.loads((run_dir / "study_wall_time.json").read_text())["wall_s"])
    else:
        (run_dir / "study_wall_time.json").write_text(json.dumps({"wall_s": wall_s}) + "\n")
    return RunRecord(
        method=method,
        seed=seed,
        run_dir=str(run_dir),
        wall_s=wall_s,
        ok=True,
        reused=reused,
        final={k: v for k, v in summary.get("final", {}).items() if k != "round"},
        per_site_final=summary.get("per_site_final", {}),
        mean_dice_per_round=per_round,
    )


def run_federated(
    method: str, seed: int, args: argparse.Namespace, base_config: str, runs: Path, logs: Path, progress: Progress
) -> RunRecord:
    name = f"{method}-seed{seed}"
    run_dir = runs / name
    if reusable(run_dir):
        return record_of(method, seed, run_dir, 0.0, reused=True)
    run_config = f"{base_config} strategy='{method}' seed={seed} run-name='{name}'"
    flwr_home = logs / f"flwr-home-{name}"
    command = [
        sys.executable,
        str(REPO / "scripts" / "simulate.py"),
        "--num-supernodes",
        str(args.sites),
        "--run-config",
        run_config,
        "--flwr-home",
        str(flwr_home),
    ]
    round_task = progress.add_task(f"{name}: rounds", total=args.rounds)
    site_task = progress.add_task(f"{name}: site updates", total=args.rounds * args.sites)
    started = time.perf_counter()
    log_path = logs / f"{name}.log"
    with (
        log_path.open("w", buffering=1) as log,
        subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
    ):
        for line in proc.stdout:
            log.write(line)
            if match := ROUND_LINE.search(line):
                progress.update(round_task, completed=int(match.group(1)) - 1)
            if match := RECEIVED_LINE.search(line):
                progress.advance(site_task, int(match.group(1)))
    wall_s = time.perf_counter() - started
    shutil.rmtree(flwr_home, ignore_errors=True)
    progress.remove_task(round_task)
    progress.remove_task(site_task)
    if proc.returncode != 0 or not (run_dir / "summary.json").is_file():
        return RunRecord(
            method, seed, str(run_dir), wall_s, ok=False, error=f"simulate.py exit {proc.returncode}; see {log_path}"
        )
    return record_of(method, seed, run_dir, wall_s, reused=False)


def run_baseline(
    kind: str, seed: int, args: argparse.Namespace, base_config: str, runs: Path, progress: Progress
) -> RunRecord:
    name = f"{kind}-seed{seed}"
    run_dir = runs / name
    if reusable(run_dir):
        return record_of(kind, seed, run_dir, 0.0, reused=True)
    config = app_run_config(f"{base_config} seed={seed} run-name='{name}'")
    started = time.perf_counter()
    try:
        if kind == POOLED:
            run_centralized(config, args.sites, run_dir, progress)
        else:
            # Eight models scored every round would cost more than the rest of the study on a CPU.
            run_local(config, args.sites, run_dir, progress, score_every_round=args.local_every_round)
    except (DataError, ConfigError) as exc:
        return RunRecord(kind, seed, str(run_dir), time.perf_counter() - started, ok=False, error=str(exc))
    return record_of(kind, seed, run_dir, time.perf_counter() - started, reused=False)


# ----------------------------------------------------------------------------- table


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def comparison_rows(records: list[RunRecord], seeds: list[int]) -> list[dict]:
    """One row per method (and per local site): means over seeds, ratio to pooled, gain over local."""
    ok = [r for r in records if r.ok]
    by_method: dict[str, dict[int, dict]] = {}
    for record in ok:
        by_method.setdefault(record.method, {})[record.seed] = record.final
        if record.method == LOCAL:
            for site, final in record.per_site_final.items():
                by_method.setdefault(f"{LOCAL} {site}", {})[record.seed] = {
                    k: v for k, v in final.items() if k != "round"
                }
    walls: dict[str, list[float]] = {}
    for record in ok:
        walls.setdefault(record.method, []).append(record.wall_s)
    pooled = by_method.get(POOLED, {})
    local = by_method.get(LOCAL, {})
    rows = []
    order = [POOLED, LOCAL] + sorted(k for k in by_method if k.startswith(f"{LOCAL} "))
    order += [m for m in by_method if m not in order]
    for method in order:
        finals = by_method[method]
        row: dict = {"method": method, "seeds": len(finals)}
        for metric in [f"dice_{r}" for r in REGIONS] + [f"hd95_{r}" for r in REGIONS]:
            row[metric], row[f"{metric}_sd"] = _mean_sd([f[metric] for f in finals.values()])
        row["mean_dice"], row["mean_dice_sd"] = _mean_sd([mean_dice(f) for f in finals.values()])
        paired = [s for s in finals if s in pooled]
        row["ratio_to_pooled"] = (
            statistics.fmean(mean_dice(finals[s]) / mean_dice(pooled[s]) for s in paired) if paired else None
        )
        paired = [s for s in finals if s in local]
        row["gain_over_mean_local"] = (
            statistics.fmean(mean_dice(finals[s]) - mean_dice(local[s]) for s in paired) if paired else None
        )
        row["relative_gain_over_mean_local"] = (
            statistics.fmean(mean_dice(finals[s]) / mean_dice(local[s]) - 1 for s in paired) if paired else None
        )
        row["wall_s"] = statistics.fmean(walls[method]) if method in walls else None
        rows.append(row)
    return rows


def _fmt(value, sd=None, digits=3) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} ± {sd:.{digits}f}" if sd is not None else text


def _display(row: dict) -> list[str]:
    gain = row["gain_over_mean_local"]
    relative = row["relative_gain_over_mean_local"]
    return [
        row["method"],
        *(_fmt(row[f"dice_{r}"], row[f"dice_{r}_sd"]) for r in REGIONS),
        _fmt(row["mean_dice"], row["mean_dice_sd"]),
        *(_fmt(row[f"hd95_{r}"], row[f"hd95_{r}_sd"], 1) for r in REGIONS),
        _fmt(row["ratio_to_pooled"]),
        "-" if gain is None else f"{gain:+.3f} ({relative:+.0%})",
        _fmt(row["wall_s"], digits=0),
    ]


HEADERS = [
    "method", "Dice ET", "Dice TC", "Dice WT", "mean Dice", "HD95 ET mm", "HD95 TC mm", "HD95 WT mm",
    "/ pooled", "gain over mean local", "wall s",
]  # fmt: skip


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|"]
    lines += ["| " + " | ".join(_display(row)) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n")


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_dice_per_round(records: list[RunRecord], path: Path) -> None:
    """Held-out mean Dice (ET, TC, WT) per round, averaged over seeds, one line per method."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    methods: dict[str, list[dict]] = {}
    for record in records:
        if record.ok and record.mean_dice_per_round:
            methods.setdefault(record.method, []).append(record.mean_dice_per_round)
    for method, curves in methods.items():
        rounds = sorted(set.intersection(*(set(c) for c in curves)))
        means = [statistics.fmean(c[r] for c in curves) for r in rounds]
        style = {"linestyle": "--", "linewidth": 2.5} if method in (POOLED, LOCAL) else {"marker": "o"}
        label = {POOLED: "pooled data (upper bound)", LOCAL: "mean local-only model"}.get(method, method)
        ax.plot(rounds, means, label=label, **style)
        if len(curves) > 1:
            low = [min(c[r] for c in curves) for r in rounds]
            high = [max(c[r] for c in curves) for r in rounds]
            ax.fill_between(rounds, low, high, alpha=0.12)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (baselines: the same epochs)")
    ax.set_ylabel("held-out mean Dice (ET, TC, WT)")
    ax.set_title("Held-out Dice per round; band: range over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=130)


def print_table(rows: list[dict], console: Console) -> None:
    table = Table(title="Held-out test set, final round")
    for index, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*_display(row))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    out = args.out.expanduser().resolve()
    runs, logs = out / "runs", out / "logs"
    runs.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    try:
        cohort = generate_cohort(
            out / "cohort", args.sites, args.subjects, args.cohort_seed, n_test=args.test_subjects
        ).root
        base_config = common_run_config(args, cohort, runs)
        app_run_config(base_config)  # a bad --run-config stops here, before any run
    except (ConfigError, DataError, ValueError) as exc:
        console.print(f"error: {exc}", style="bold red", highlight=False)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)  # in-process baselines use every core, like the simulation
    methods = ([] if args.no_baselines else [POOLED, LOCAL]) + list(args.methods)
    records: list[RunRecord] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        study = progress.add_task("study: runs", total=len(methods) * len(args.seeds))
        for seed in args.seeds:
            for method in methods:
                if method in (POOLED, LOCAL):
                    record = run_baseline(method, seed, args, base_config, runs, progress)
                else:
                    record = run_federated(method, seed, args, base_config, runs, logs, progress)
                records.append(record)
                status = "reused" if record.reused else ("ok" if record.ok else f"FAILED: {record.error}")
                progress.console.print(f"{method} seed {seed}: {status} ({record.wall_s:.0f}s)", highlight=False)
                progress.advance(study)
    rows = comparison_rows(records, args.seeds)
    if not rows:
        console.print("error: no run finished; see the logs under " + str(logs), style="bold red")
        return 1
    write_markdown(rows, out / "comparison.md")
    write_csv(rows, out / "comparison.csv")
    plot_dice_per_round(records, out / "dice_per_round.png")
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else "compare.main(...)",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "run_config": base_config,
        "cohort": str(cohort),
        "wall_s": time.perf_counter() - started,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "runs": [asdict(r) for r in records],
    }
    (out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    print_table(rows, console)
    console.print(f"wrote {out / 'comparison.md'}, comparison.csv, comparison.json, dice_per_round.png")
    return 0 if all(r.ok for r in records) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
