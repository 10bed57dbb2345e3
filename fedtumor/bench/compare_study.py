"""The comparison study: every method, every seed, one non-IID synthetic cohort, one held-out test set.

For each seed: the pooled-data model (the upper bound), one local-only model per site, and a
real Flower simulation of the app per federated strategy, all with the same model, patches,
rounds x local epochs and held-out test set. Under the study folder: ``cohort/``,
``runs/<method>-seed<k>/`` (each run's own folder) and ``logs/`` (each simulation's output).
A finished run (its summary present) is reused, so an interrupted study picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.progress import Progress

from fedtumor.baselines.centralized import run_centralized
from fedtumor.baselines.local import run_local
from fedtumor.bench.compare import (
    LOCAL,
    POOLED,
    RunRecord,
    comparison_rows,
    plot_dice_per_round,
    write_csv,
    write_markdown,
)
from fedtumor.core.config import read_run_config
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.core.metrics import mean_dice
from fedtumor.deployment.simulation import simulation_command
from fedtumor.federation.settings import check_federation_keys, required_overrides
from fedtumor.run.files import SUMMARY_FILE
from fedtumor.run.writer import GLOBAL_SCOPE, metric_table, read_metrics, read_summary

FEDERATED_METHODS = ("fedavg", "fedprox", "fedbn", "scaffold", "fedcostwavg", "fedpidavg")
STUDY_FILES = ("comparison.md", "comparison.csv", "comparison.json", "dice_per_round.png")
WALL_TIME_FILE = "study_wall_time.json"  # a reused run keeps the wall time it took when it ran
ROUND_LINE = re.compile(r"\[ROUND (\d+)")
RECEIVED_LINE = re.compile(r"aggregate_train: Received (\d+) results")


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs: the cohort, the seeds, the methods and the shared run config."""

    sites: int
    subjects: int
    test_subjects: int
    cohort_seed: int
    seeds: list[int]
    methods: list[str]
    rounds: int
    run_config: str = ""
    baselines: bool = True
    local_every_round: bool = False  # score local models every round (default: round 0 and last)

    def all_methods(self) -> list[str]:
        return ([POOLED, LOCAL] if self.baselines else []) + list(self.methods)


@dataclass(frozen=True)
class Study:
    """A prepared study: where it writes, its cohort, the run config every method shares, the app it runs."""

    plan: StudyPlan
    out: Path
    cohort: Path
    base_config: str
    app_dir: Path

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def logs(self) -> Path:
        return self.out / "logs"


def common_run_config(plan: StudyPlan, cohort: Path, runs: Path) -> str:
    # Site validation plays no part in the comparison; held-out test scoring does, every round.
    base = (
        f"data-dir='{cohort}' output-dir='{runs}' num-server-rounds={plan.rounds} "
        f"fraction-evaluate=0.0 min-available-nodes={plan.sites} server-eval=true"
    )
    return f"{base} {plan.run_config}".strip()


def prepare_study(
    plan: StudyPlan,
    out: Path,
    app_dir: Path,
    run_config_for: Callable[[StudyPlan, Path, Path], str] = common_run_config,
) -> Study:
    """Folders, the cached cohort and the checked shared run config; ConfigError, DataError or ValueError.

    ``run_config_for(plan, cohort, runs)`` is the run config every method shares (the benchmark's differs).
    """
    from data_loaders.synthetic import generate_cohort

    out = out.expanduser().resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    cohort = generate_cohort(out / "cohort", plan.sites, plan.subjects, plan.cohort_seed, n_test=plan.test_subjects)
    base_config = run_config_for(plan, cohort.root, out / "runs")
    check_federation_keys(read_run_config(base_config, app_dir))  # a bad --run-config stops here, before any run
    return Study(plan, out, cohort.root, base_config, app_dir)


def reusable(run_dir: Path) -> bool:
    """A completed run is reused; a half-written or failed one is removed and redone."""
    if (run_dir / SUMMARY_FILE).is_file() and (read_summary(run_dir) or {}).get("status") != "failed":
        return True
    if run_dir.exists():
        shutil.rmtree(run_dir)  # only this study's own run folder, left by an interrupted run
    return False


def record_of(method: str, seed: int, run_dir: Path, wall_s: float, reused: bool) -> RunRecord:
    """A finished run's record: final scores, each site's (local baseline), mean Dice per round, wall time."""
    summary = read_summary(run_dir) or {}
    test = metric_table(read_metrics(run_dir), GLOBAL_SCOPE, "test")
    per_round = {int(r): mean_dice(row) for r, row in test.iterrows()} if not test.empty else {}
    if reused:
        wall_s = float(json.loads((run_dir / WALL_TIME_FILE).read_text())["wall_s"])
    else:
        (run_dir / WALL_TIME_FILE).write_text(json.dumps({"wall_s": wall_s}) + "\n")
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


def run_federated(study: Study, method: str, seed: int, progress: Progress) -> RunRecord:
    """One federated strategy as a real simulation of the app, its log in ``logs/``."""
    plan = study.plan
    name = f"{method}-seed{seed}"
    run_dir = study.runs / name
    if reusable(run_dir):
        return record_of(method, seed, run_dir, 0.0, reused=True)
    # A method's own requirements (SCAFFOLD: optimizer='sgd') after the shared config.
    run_config = f"{study.base_config} strategy='{method}' {required_overrides(method)} seed={seed} run-name='{name}'"
    flwr_home = study.logs / f"flwr-home-{name}"
    command = [
        *simulation_command(study.app_dir),
        *("--num-supernodes", str(plan.sites), "--run-config", run_config, "--flwr-home", str(flwr_home)),
    ]
    round_task = progress.add_task(f"{name}: rounds", total=plan.rounds)
    site_task = progress.add_task(f"{name}: site updates", total=plan.rounds * plan.sites)
    started = time.perf_counter()
    log_path = study.logs / f"{name}.log"
    with (
        log_path.open("w", buffering=1) as log,
        subprocess.Popen(
            command, cwd=study.app_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
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
    if proc.returncode != 0 or not (run_dir / SUMMARY_FILE).is_file():
        error = f"simulation exit {proc.returncode}; see {log_path}"
        return RunRecord(method, seed, str(run_dir), wall_s, ok=False, error=error)
    return record_of(method, seed, run_dir, wall_s, reused=False)


def run_baseline(study: Study, kind: str, seed: int, progress: Progress) -> RunRecord:
    """The pooled or local-only baseline in this process, on the config the federations read."""
    name = f"{kind}-seed{seed}"
    run_dir = study.runs / name
    if reusable(run_dir):
        return record_of(kind, seed, run_dir, 0.0, reused=True)
    started = time.perf_counter()
    try:
        config = read_run_config(f"{study.base_config} seed={seed} run-name='{name}'", study.app_dir)
        if kind == POOLED:
            run_centralized(config, study.plan.sites, run_dir, progress)
        else:
            # Eight models scored every round would cost more than the rest of the study on a CPU.
            run_local(config, study.plan.sites, run_dir, progress, score_every_round=study.plan.local_every_round)
    except (DataError, ConfigError) as exc:
        return RunRecord(kind, seed, str(run_dir), time.perf_counter() - started, ok=False, error=str(exc))
    return record_of(kind, seed, run_dir, time.perf_counter() - started, reused=False)


def run_study(
    study: Study, progress: Progress, on_record: Callable[[RunRecord], None] | None = None
) -> list[RunRecord]:
    """Every method for every seed, in that order; ``on_record`` hears of each run as it ends."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # in-process baselines use every core, like the simulation
    methods = study.plan.all_methods()
    records: list[RunRecord] = []
    task = progress.add_task("study: runs", total=len(methods) * len(study.plan.seeds))
    for seed in study.plan.seeds:
        for method in methods:
            if method in (POOLED, LOCAL):
                record = run_baseline(study, method, seed, progress)
            else:
                record = run_federated(study, method, seed, progress)
            records.append(record)
            if on_record is not None:
                on_record(record)
            progress.advance(task)
    return records


def write_study_outputs(
    study: Study,
    records: list[RunRecord],
    command: str,
    settings: dict,
    started: float,
    load_before: tuple[float, float, float],
) -> list[dict]:
    """The table as :data:`STUDY_FILES` in the study folder (its rows returned; none when no run finished).

    ``started`` is the study's ``time.perf_counter()`` start and ``load_before`` the load then.
    """
    rows = comparison_rows(records)
    if not rows:
        return rows
    markdown, table_csv, report_json, plot = (study.out / name for name in STUDY_FILES)
    write_markdown(rows, markdown)
    write_csv(rows, table_csv)
    plot_dice_per_round(records, plot)
    report = {
        "command": command,
        "settings": settings,
        "run_config": study.base_config,
        "cohort": str(study.cohort),
        "wall_s": time.perf_counter() - started,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "runs": [asdict(r) for r in records],
    }
    report_json.write_text(json.dumps(report, indent=2) + "\n")
    return rows
