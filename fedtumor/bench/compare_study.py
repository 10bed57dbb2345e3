"""The comparison study: every method, every seed, one non-IID synthetic cohort, one held-out test set.

For each seed: the pooled-data model (the upper bound), one local-only model per site, a real
Flower simulation of the app per federated strategy and FedAvg-FT (the FedAvg run's final
model fine-tuned at each site), all with the same model, patches, rounds x local epochs and
held-out test set. With ``patience`` set, every method runs until its validation mean Dice
stops improving (``early-stopping-monitor='validation'``: the test set never picks the round),
up to ``rounds``. Under the study folder: ``cohort/``, ``runs/<method>-seed<k>/`` (each run's
own folder) and ``logs/`` (each simulation's output). A finished run (its summary present) is
reused, so an interrupted study picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.progress import Progress

from fedtumor.baselines.centralized import run_centralized
from fedtumor.baselines.fine_tune import run_fine_tune
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
from fedtumor.bench.study_records import (
    dice_per_round,
    heldout_per_subject,
    mean_over_site_models,
    personal_scores,
    site_validation_dice,
    stop_round,
)
from fedtumor.bench.study_report import (
    PERSONAL_ONLY,
    copy_heatmaps,
    paired_markdown,
    paired_rows,
    personalised_markdown,
    personalised_rows,
)
from fedtumor.core.config import parse_overrides, read_run_config
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.deployment.simulation import simulation_command
from fedtumor.federation.settings import check_federation_keys, required_overrides
from fedtumor.run.files import SUMMARY_FILE
from fedtumor.run.writer import read_summary

FEDERATED_METHODS = ("fedavg", "fedprox", "fedadam", "fedbn", "scaffold", "fedcostwavg", "fedpidavg", "ditto")
FINE_TUNED = "fedavg-ft"  # FedAvg's final model fine-tuned at each site (fedtumor/baselines/fine_tune.py)
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
    patience: int = 0  # early stopping on the validation mean Dice; 0: every method runs all its rounds
    min_delta: float = 0.0
    fine_tune_epochs: int = 0  # FedAvg-FT after each FedAvg run; 0: not run
    geometry: str = "cube"  # the synthetic cohort's: "cube" (64^3, 3 mm) or "brats" (240x240x155, 1 mm)
    num_gpus: float = 0.0  # GPU fraction per simulated ClientApp
    method_run_config: dict[str, str] = field(default_factory=dict)  # a method's own settings, applied last

    def all_methods(self) -> list[str]:
        methods = ([POOLED, LOCAL] if self.baselines else []) + list(self.methods)
        if self.fine_tune_epochs and "fedavg" in self.methods:
            methods.insert(methods.index("fedavg") + 1, FINE_TUNED)
        return methods


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


def format_run_config(values: dict) -> str:
    """``{key: value}`` as ``--run-config`` text Flower parses back to the same values."""

    def text(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return f"'{value}'" if isinstance(value, str) else repr(value)

    return " ".join(f"{key}={text(value)}" for key, value in values.items())


def merged_run_config(*parts: str) -> str:
    """Several ``--run-config`` texts as one, a later one's key replacing an earlier one's."""
    values: dict = {}
    for part in parts:
        values.update(parse_overrides(part))
    return format_run_config(values)


def common_run_config(plan: StudyPlan, cohort: Path, runs: Path) -> str:
    """With patience: validation every round (to stop on; the curves), held-out on the final model only."""
    base = (
        f"data-dir='{cohort}' output-dir='{runs}' num-server-rounds={plan.rounds} "
        f"min-available-nodes={plan.sites} server-eval=true cross-site-eval=true"
    )
    if plan.patience:
        base += (
            f" fraction-evaluate=1.0 early-stopping-patience={plan.patience}"
            f" early-stopping-min-delta={plan.min_delta} early-stopping-monitor='validation' server-eval-every=0"
        )
    else:
        base += " fraction-evaluate=0.0"
    return merged_run_config(base, plan.run_config)


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
    cohort = generate_cohort(
        out / "cohort", plan.sites, plan.subjects, plan.cohort_seed, n_test=plan.test_subjects, geometry=plan.geometry
    )
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


def kept_wall_time(run_dir: Path, wall_s: float, reused: bool) -> float:
    """The run's wall time: a reused run's as it was when it ran, a new one's recorded for later reuse."""
    if reused:
        return float(json.loads((run_dir / WALL_TIME_FILE).read_text())["wall_s"])
    (run_dir / WALL_TIME_FILE).write_text(json.dumps({"wall_s": wall_s}) + "\n")
    return wall_s


def curve_split(plan: StudyPlan) -> str:
    """What the study's Dice-per-round curves are scored on: validation when it stops on it, else held-out."""
    return "val" if plan.patience else "test"


def record_of(method: str, seed: int, run_dir: Path, wall_s: float, reused: bool, curve: str = "test") -> RunRecord:
    """A finished run's record: final scores, site scores, mean Dice per round on ``curve``, wall time."""
    summary = read_summary(run_dir) or {}
    per_round = dice_per_round(run_dir, summary, curve, personal=method in PERSONAL_ONLY)
    wall_s = kept_wall_time(run_dir, wall_s, reused)
    if method == LOCAL:
        site_dirs = [run_dir / site for site in summary.get("per_site_final", {})]
        per_subject = mean_over_site_models([heldout_per_subject(site_dir) for site_dir in site_dirs])
        stops = [stop_round(read_summary(site_dir) or {}) for site_dir in site_dirs]
        final_round = max((r for r in stops if r is not None), default=None)  # the last site model to stop
    else:
        per_subject, final_round = heldout_per_subject(run_dir), stop_round(summary)
    final = {k: v for k, v in summary.get("final", {}).items() if k != "round"}
    if method in PERSONAL_ONLY:  # scored as what it delivers: the site models, on the held-out set
        heldout = ((summary.get("personalised") or {}).get("mean") or {}).get("personal_heldout") or {}
        final = {k: v for k, v in heldout.items() if k != "mean_dice"}
        per_subject = {}
        per_round = per_round if curve == "val" else {}  # its held-out curve is the global model's
    return RunRecord(
        method=method,
        seed=seed,
        run_dir=str(run_dir),
        wall_s=wall_s,
        ok=True,
        reused=reused,
        final=final,
        per_site_final=summary.get("per_site_final", {}),
        mean_dice_per_round=per_round,
        per_subject=per_subject,
        stop_round=final_round,
        stopped_early=bool(summary.get("stopped_early")) or any(summary.get("per_site_stopped_early", {}).values()),
        patches_seen=summary.get("patches_seen"),
        site_val_dice=site_validation_dice(run_dir, summary),
        personal=personal_scores(summary),
    )


def run_federated(study: Study, method: str, seed: int, progress: Progress) -> RunRecord:
    """One federated strategy as a real simulation of the app, its log in ``logs/``."""
    plan = study.plan
    name = f"{method}-seed{seed}"
    run_dir = study.runs / name
    if reusable(run_dir):
        return record_of(method, seed, run_dir, 0.0, reused=True, curve=curve_split(plan))
    # A method's own requirements (SCAFFOLD: optimizer='sgd') after the shared config.
    run_config = merged_run_config(
        study.base_config,
        plan.method_run_config.get(method, ""),
        f"strategy='{method}' {required_overrides(method)} seed={seed} run-name='{name}'",
    )
    flwr_home = study.logs / f"flwr-home-{name}"
    command = [
        *simulation_command(study.app_dir),
        *("--num-supernodes", str(plan.sites), "--run-config", run_config, "--flwr-home", str(flwr_home)),
        *(("--num-gpus", str(plan.num_gpus)) if plan.num_gpus else ()),
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
    return record_of(method, seed, run_dir, wall_s, reused=False, curve=curve_split(plan))


def run_baseline(study: Study, kind: str, seed: int, progress: Progress) -> RunRecord:
    """The pooled or local-only baseline in this process, on the config the federations read."""
    name = f"{kind}-seed{seed}"
    run_dir = study.runs / name
    if reusable(run_dir):
        return record_of(kind, seed, run_dir, 0.0, reused=True, curve=curve_split(study.plan))
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
    return record_of(kind, seed, run_dir, time.perf_counter() - started, reused=False, curve=curve_split(study.plan))


def run_fine_tuned(study: Study, seed: int, fedavg: RunRecord | None, progress: Progress) -> RunRecord:
    """FedAvg-FT: the seed's FedAvg run fine-tuned at each site; its record carries the personal scores."""
    name = f"{FINE_TUNED}-seed{seed}"
    run_dir = study.runs / name
    if fedavg is None or not fedavg.ok:
        return RunRecord(FINE_TUNED, seed, str(run_dir), 0.0, ok=False, error="its FedAvg run did not finish")
    reused = reusable(run_dir)
    started = time.perf_counter()
    if not reused:
        try:
            run_fine_tune(Path(fedavg.run_dir), study.plan.fine_tune_epochs, run_dir, progress=progress)
        except (DataError, ConfigError) as exc:
            return RunRecord(FINE_TUNED, seed, str(run_dir), time.perf_counter() - started, ok=False, error=str(exc))
    wall_s = kept_wall_time(run_dir, time.perf_counter() - started, reused)
    summary = read_summary(run_dir) or {}
    heldout = summary["mean"]["personal_heldout"] or {}
    patches = int(summary.get("patches_seen", 0))
    return RunRecord(
        method=FINE_TUNED,
        seed=seed,
        run_dir=str(run_dir),
        wall_s=fedavg.wall_s + wall_s,  # FedAvg-FT is the FedAvg run and its fine-tuning
        ok=True,
        reused=reused,
        final={k: v for k, v in heldout.items() if k != "mean_dice"},  # the fine-tuned models, mean over sites
        stop_round=fedavg.stop_round,
        stopped_early=fedavg.stopped_early,
        patches_seen=None if fedavg.patches_seen is None else fedavg.patches_seen + patches,
        site_val_dice=fedavg.site_val_dice,
        personal=personal_scores(summary),
    )


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
            elif method == FINE_TUNED:
                fedavg = next((r for r in records if r.method == "fedavg" and r.seed == seed), None)
                record = run_fine_tuned(study, seed, fedavg, progress)
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
    paired, personalised = paired_rows(records), personalised_rows(records)
    with markdown.open("a") as handle:
        handle.write("\nPaired: the best federated method against the mean local-only model and pooled\n\n")
        handle.write(paired_markdown(paired))
        handle.write("\nPersonalised: mean Dice on the sites' own validation subjects, and held-out\n\n")
        handle.write(personalised_markdown(personalised))
    write_csv(rows, table_csv)
    plot_dice_per_round(records, plot, on_validation=curve_split(study.plan) == "val")
    heatmaps = copy_heatmaps(records, study.out)
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
        "paired": paired,
        "personalised": personalised,
        "heatmaps": [path.name for path in heatmaps],
        "runs": [asdict(r) for r in records],
    }
    report_json.write_text(json.dumps(report, indent=2) + "\n")
    return rows
