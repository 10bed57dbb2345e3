"""Federated versus pooled versus local-only: the comparison table's statistics, its files and its plot.

One :class:`RunRecord` per finished (or failed) run of a study; :func:`comparison_rows` turns
them into one row per method: held-out Dice and HD95 per region (mean over seeds and test
subjects with a 95% bootstrap interval over both, :mod:`fedtumor.bench.study_stats`; the
standard deviation over seeds where a run kept no per-subject scores), the ratio of each
method's mean Dice to the pooled model's and its gain over the mean local-only model, both
paired by seed, the rounds it stopped at, the patches it trained on, its mean Dice on the
sites' own validation subjects and the mean wall time.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedtumor.bench.report import markdown_table
from fedtumor.bench.study_stats import bootstrap_ci, mean_dice_matrix, score_matrix
from fedtumor.core.metrics import mean_dice

POOLED, LOCAL = "pooled", "local"
REGIONS = ("et", "tc", "wt")
HEADERS = [
    "method", "stop round", "patches", "Dice ET", "Dice TC", "Dice WT", "mean Dice", "HD95 ET mm", "HD95 TC mm",
    "HD95 WT mm", "/ pooled", "gain over mean local", "sites' val Dice", "wall s",
]  # fmt: skip


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
    per_subject: dict = field(default_factory=dict)  # final held-out scores, {subject: {metric: value}}
    stop_round: int | None = None  # the round (baselines: round-sized block) the final model comes from
    stopped_early: bool = False
    patches_seen: int | None = None
    site_val_dice: float | None = None  # on the sites' own validation subjects (study_records.py)
    personal: dict | None = None  # personal models' mean Dice: global_val, personal_val, personal_heldout


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _without_round(final: dict) -> dict:
    return {k: v for k, v in final.items() if k != "round"}


def _finals_by_method(records: list[RunRecord]) -> dict[str, dict[int, dict]]:
    """Final scores per method and seed; the local baseline adds one method per site ("local site-k")."""
    by_method: dict[str, dict[int, dict]] = {}
    for record in records:
        by_method.setdefault(record.method, {})[record.seed] = record.final
        if record.method == LOCAL:
            for site, final in record.per_site_final.items():
                by_method.setdefault(f"{LOCAL} {site}", {})[record.seed] = _without_round(final)
    return by_method


def _paired_mean(finals: dict[int, dict], reference: dict[int, dict], compare) -> float | None:
    """Mean over the seeds both have of ``compare(mean Dice, reference mean Dice)``; None when none."""
    seeds = [seed for seed in finals if seed in reference]
    if not seeds:
        return None
    return statistics.fmean(compare(mean_dice(finals[s]), mean_dice(reference[s])) for s in seeds)


def _subject_intervals(records: list[RunRecord]) -> dict[str, tuple[float, float]]:
    """``{metric: 95% interval}`` over seeds and test subjects; {} unless every seed kept per-subject scores."""
    per_seed = {r.seed: r.per_subject for r in records}
    if not records or not all(per_seed.values()):
        return {}
    intervals = {
        m: bootstrap_ci(score_matrix(per_seed, m)) for m in [f"{k}_{r}" for k in ("dice", "hd95") for r in REGIONS]
    }
    intervals["mean_dice"] = bootstrap_ci(mean_dice_matrix(per_seed, REGIONS))
    return intervals


def _run_facts(records: list[RunRecord]) -> dict:
    """Stop rounds (one per seed), mean patches, mean sites' validation Dice of a method's runs."""
    patches = [r.patches_seen for r in records if r.patches_seen is not None]
    site_val = [r.site_val_dice for r in records if r.site_val_dice is not None]
    return {
        "stop_rounds": [r.stop_round for r in sorted(records, key=lambda r: r.seed)],
        "early_stops": [r.stopped_early for r in sorted(records, key=lambda r: r.seed)],
        "patches_seen": statistics.fmean(patches) if patches else None,
        "site_val_dice": statistics.fmean(site_val) if site_val else None,
    }


def comparison_rows(records: list[RunRecord]) -> list[dict]:
    """One row per method (and per local site): means over seeds, ratio to pooled, gain over local.

    Failed runs are left out. Order: pooled, local, each local site, then the federated methods.
    """
    ok = [r for r in records if r.ok]
    by_method = _finals_by_method(ok)
    walls: dict[str, list[float]] = {}
    for record in ok:
        walls.setdefault(record.method, []).append(record.wall_s)
    pooled = by_method.get(POOLED, {})
    local = by_method.get(LOCAL, {})
    order = [m for m in (POOLED, LOCAL) if m in by_method]
    order += sorted(k for k in by_method if k.startswith(f"{LOCAL} "))
    order += [m for m in by_method if m not in order]
    rows = []
    for method in order:
        finals = by_method[method]
        runs = [r for r in ok if r.method == method]
        row: dict = {"method": method, "seeds": len(finals)}
        intervals = _subject_intervals(runs)
        for metric in [f"dice_{r}" for r in REGIONS] + [f"hd95_{r}" for r in REGIONS]:
            row[metric], row[f"{metric}_sd"] = _mean_sd([f[metric] for f in finals.values()])
            row[f"{metric}_ci"] = intervals.get(metric)
        row["mean_dice"], row["mean_dice_sd"] = _mean_sd([mean_dice(f) for f in finals.values()])
        row["mean_dice_ci"] = intervals.get("mean_dice")
        row.update(_run_facts(runs))
        row["ratio_to_pooled"] = _paired_mean(finals, pooled, lambda d, ref: d / ref)
        row["gain_over_mean_local"] = _paired_mean(finals, local, lambda d, ref: d - ref)
        row["relative_gain_over_mean_local"] = _paired_mean(finals, local, lambda d, ref: d / ref - 1)
        row["wall_s"] = statistics.fmean(walls[method]) if method in walls else None
        rows.append(row)
    return rows


def _fmt(value, sd=None, digits=3, ci=None) -> str:
    """``0.812 [0.780, 0.840]`` with an interval, ``0.812 ± 0.010`` with a standard deviation."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    if ci is not None:
        return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return f"{text} ± {sd:.{digits}f}" if sd is not None else text


def _stop_rounds(row: dict) -> str:
    """One round per seed; ``*``: early stopping ended it (else the round cap did)."""
    pairs = zip(row.get("stop_rounds", []), row.get("early_stops", []), strict=False)
    rounds = [f"{r}*" if early else str(r) for r, early in pairs if r is not None]
    return ", ".join(rounds) if rounds else "-"


def display_row(row: dict) -> list[str]:
    """A row's cells under :data:`HEADERS`, as the markdown table and the terminal show them."""
    gain = row["gain_over_mean_local"]
    relative = row["relative_gain_over_mean_local"]
    return [
        row["method"],
        _stop_rounds(row),
        _fmt(row.get("patches_seen"), digits=0),
        *(_fmt(row[f"dice_{r}"], row[f"dice_{r}_sd"], ci=row.get(f"dice_{r}_ci")) for r in REGIONS),
        _fmt(row["mean_dice"], row["mean_dice_sd"], ci=row.get("mean_dice_ci")),
        *(_fmt(row[f"hd95_{r}"], row[f"hd95_{r}_sd"], 1, ci=row.get(f"hd95_{r}_ci")) for r in REGIONS),
        _fmt(row["ratio_to_pooled"]),
        "-" if gain is None else f"{gain:+.3f} ({relative:+.0%})",
        _fmt(row.get("site_val_dice")),
        _fmt(row["wall_s"], digits=0),
    ]


def write_markdown(rows: list[dict], path: Path) -> None:
    path.write_text(markdown_table(HEADERS, [display_row(row) for row in rows]))


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_dice_per_round(records: list[RunRecord], path: Path, on_validation: bool = False) -> None:
    """Mean Dice (ET, TC, WT) per round, averaged over seeds, one line per method.

    The records' curves are held-out scores, or with ``on_validation`` the sites' validation scores.
    """
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
    scored_on = "validation (sites' own subjects)" if on_validation else "held-out"
    ax.set_ylabel(f"{scored_on} mean Dice (ET, TC, WT)")
    ax.set_title(f"{scored_on.capitalize()} Dice per round; band: range over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=130)
