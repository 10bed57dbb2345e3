"""`fedtumor strategies benchmark NAME`: one plugin next to FedAvg, scored as FeTS Challenge Task 1 scored.

The comparison study's machinery (``fedtumor/bench/compare_study.py``) at its reduced CI size,
without the pooled and local baselines, for FedAvg and the plugin, under FeTS's time model
(``time-model = "fets"``, docs/fets.md) with the sites validating every round (FeTS counted
validation time, and scores only validated models). Per method, averaged over seeds: the
final model's held-out Dice and HD95 per region, the simulated time and the convergence
score; and a plot of held-out mean Dice versus simulated time. Under ``--out``: the study's
``cohort/``, ``runs/`` and ``logs/``, and :data:`BENCHMARK_FILES`.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from matplotlib.figure import Figure

from fedtumor.bench.compare import REGIONS, RunRecord
from fedtumor.bench.compare_study import Study, StudyPlan, prepare_study
from fedtumor.core.metrics import mean_dice
from fedtumor.run.writer import GLOBAL_SCOPE, metric_table, read_metrics, read_summary

REFERENCE = "fedavg"
BENCHMARK_FILES = ("benchmark.md", "benchmark.json", "dice_vs_simulated_time.png")
# The study's reduced CI size (scripts/compare.py --reduced) but 3 rounds: with 1 round, FeTS's
# score would credit only the initial model, the same for every method.
REDUCED_SIZE = {
    "sites": 2,
    "subjects": 6,
    "test_subjects": 1,
    "cohort_seed": 0,
    "rounds": 3,
    "run_config": "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=4",
}
HEADERS = [
    "method", "Dice ET", "Dice TC", "Dice WT", "HD95 ET mm", "HD95 TC mm", "HD95 WT mm",
    "simulated h", "convergence score",
]  # fmt: skip


def benchmark_plan(name: str, seeds: list[int], rounds: int | None = None, run_config: str = "") -> StudyPlan:
    """The reduced study of FedAvg and ``name`` (FedAvg alone when ``name`` is FedAvg)."""
    size = dict(REDUCED_SIZE)
    if rounds is not None:
        size["rounds"] = rounds
    size["run_config"] = f"{size['run_config']} {run_config}".strip()
    methods = list(dict.fromkeys([REFERENCE, name]))
    return StudyPlan(**size, seeds=list(seeds), methods=methods, baselines=False)


def benchmark_run_config(plan: StudyPlan, cohort: Path, runs: Path) -> str:
    # Unlike the study, sites validate every round: FeTS's time model counts it and scores validated models.
    base = (
        f"data-dir='{cohort}' output-dir='{runs}' num-server-rounds={plan.rounds} fraction-evaluate=1.0 "
        f"min-available-nodes={plan.sites} server-eval=true time-model='fets'"
    )
    return f"{base} {plan.run_config}".strip()


def prepare_benchmark(plan: StudyPlan, out: Path, app_dir: Path) -> Study:
    """The study's preparation with the benchmark's run config; ConfigError, DataError or ValueError."""
    return prepare_study(plan, out, app_dir, run_config_for=benchmark_run_config)


@dataclass(frozen=True)
class Curve:
    """One run's held-out mean Dice after each round and the simulated time it was there (round 0 at 0 s)."""

    times_s: list[float]
    dice: list[float]


def run_curve(record: RunRecord) -> Curve:
    """The rounds with both a held-out score and a simulated time, in order."""
    train = metric_table(read_metrics(record.run_dir), GLOBAL_SCOPE, "train")
    times = {0: 0.0}
    if "simulated_time_s" in train:
        times.update({int(r): float(t) for r, t in train["simulated_time_s"].dropna().items()})
    rounds = sorted(r for r in record.mean_dice_per_round if r in times)
    return Curve([times[r] for r in rounds], [record.mean_dice_per_round[r] for r in rounds])


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def benchmark_rows(records: list[RunRecord]) -> list[dict]:
    """One row per method (finished runs only, FedAvg first): seed means of the Task-1 scores."""
    by_method: dict[str, list[RunRecord]] = {}
    for record in records:
        if record.ok:
            by_method.setdefault(record.method, []).append(record)
    rows = []
    for method in sorted(by_method, key=lambda m: (m != REFERENCE, m)):
        runs = by_method[method]
        summaries = [read_summary(r.run_dir) or {} for r in runs]
        row: dict = {"method": method, "seeds": len(runs)}
        for metric in [f"dice_{r}" for r in REGIONS] + [f"hd95_{r}" for r in REGIONS]:
            row[metric] = _mean([r.final.get(metric) for r in runs])
        row["mean_dice"] = _mean([mean_dice(r.final) for r in runs])
        row["simulated_time_s"] = _mean([s.get("simulated_time_s") for s in summaries])
        row["convergence_score"] = _mean([s.get("convergence_score") for s in summaries])
        row["time_model"] = ",".join(sorted({str(s.get("time_model")) for s in summaries}))
        rows.append(row)
    return rows


def _cell(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def display_row(row: dict) -> list[str]:
    """A row's cells under :data:`HEADERS`."""
    hours = None if row["simulated_time_s"] is None else row["simulated_time_s"] / 3600
    return [
        row["method"],
        *(_cell(row[f"dice_{r}"], 3) for r in REGIONS),
        *(_cell(row[f"hd95_{r}"], 1) for r in REGIONS),
        _cell(hours, 2),
        _cell(row["convergence_score"], 4),
    ]


def plot_dice_vs_time(records: list[RunRecord], path: Path) -> None:
    """Held-out mean Dice versus simulated hours, a step line per run (a model holds until the next)."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for record in records:
        if not record.ok:
            continue
        curve = run_curve(record)
        if not curve.times_s:
            continue
        label = record.method + (f" (seed {record.seed})" if len({r.seed for r in records}) > 1 else "")
        hours = [t / 3600 for t in curve.times_s]
        line = ax.step(hours, curve.dice, where="post", marker="o", label=label)[0]
        # FeTS never validates the final model, so its convergence score does not credit it.
        ax.plot(hours[-1:], curve.dice[-1:], marker="o", markerfacecolor="white", color=line.get_color())
    ax.set_xlabel("simulated time (hours, FeTS time model)")
    ax.set_ylabel("held-out mean Dice (ET, TC, WT)")
    ax.set_title("Held-out Dice over simulated time; hollow: the final model, not credited")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=130)


def write_benchmark(study: Study, records: list[RunRecord], name: str) -> list[dict]:
    """:data:`BENCHMARK_FILES` in the study folder; the rows (none when no run finished)."""
    rows = benchmark_rows(records)
    if not rows:
        return rows
    markdown, report, plot = (study.out / file for file in BENCHMARK_FILES)
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|"]
    markdown.write_text("\n".join(lines + ["| " + " | ".join(display_row(row)) + " |" for row in rows]) + "\n")
    curves = {f"{r.method}-seed{r.seed}": asdict(run_curve(r)) for r in records if r.ok}
    payload = {"strategy": name, "run_config": study.base_config, "rows": rows, "curves": curves}
    payload["runs"] = [asdict(r) for r in records]
    report.write_text(json.dumps(payload, indent=2) + "\n")
    plot_dice_vs_time(records, plot)
    return rows
