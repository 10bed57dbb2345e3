"""The study's second and third tables and its heatmaps: paired comparisons, personalised scores.

- :func:`paired_rows`: the best federated method (highest held-out mean Dice among the
  methods whose deliverable is the global model) against the mean local-only model and against
  pooled, and FedAvg against pooled: the subject-by-subject difference of mean Dice, its 95%
  bootstrap interval over seeds and subjects, and the Wilcoxon signed-rank p-value;
- :func:`personalised_rows`: on the sites' own validation subjects, the global model's and the
  personal models' mean Dice, and the personal models' on the held-out set;
- :func:`copy_heatmaps`: one seed's cross-site heatmaps, named by method, into the study folder.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from fedtumor.bench.compare import LOCAL, POOLED, REGIONS, RunRecord
from fedtumor.bench.report import markdown_table
from fedtumor.bench.study_stats import mean_dice_matrix, paired_comparison
from fedtumor.core.metrics import mean_dice
from fedtumor.run.files import CROSS_SITE_PNG

PERSONAL_ONLY = ("fedbn",)  # its global model keeps initial norm layers: the site models are what it delivers
PAIRED_HEADERS = ["comparison", "mean Dice difference", "95% CI", "Wilcoxon p", "seeds x subjects"]
PERSONAL_HEADERS = [
    "method", "sites' val: global model", "sites' val: personal models", "held-out: personal models",
]  # fmt: skip


def _per_seed(records: list[RunRecord], method: str) -> dict[int, dict]:
    return {r.seed: r.per_subject for r in records if r.ok and r.method == method and r.per_subject}


def best_federated(records: list[RunRecord]) -> str | None:
    """The method with the highest held-out mean Dice among the global-model federated ones."""
    scores: dict[str, list[float]] = {}
    for record in records:
        if record.ok and record.per_subject and record.method not in (POOLED, LOCAL, *PERSONAL_ONLY):
            scores.setdefault(record.method, []).append(mean_dice(record.final))
    return max(scores, key=lambda m: statistics.fmean(scores[m])) if scores else None


def paired_rows(records: list[RunRecord]) -> list[dict]:
    """The paired comparisons the study reports (those whose two methods both finished)."""
    best = best_federated(records)
    pairs = [(best, LOCAL), (best, POOLED)]
    if best != "fedavg":
        pairs.append(("fedavg", POOLED))
    rows = []
    for first, second in pairs:
        a, b = _per_seed(records, first), _per_seed(records, second)
        seeds = sorted(set(a) & set(b))
        if first is None or not seeds:
            continue
        comparison = paired_comparison(
            mean_dice_matrix({s: a[s] for s in seeds}, REGIONS), mean_dice_matrix({s: b[s] for s in seeds}, REGIONS)
        )
        rows.append({"first": first, "second": second, **comparison})
    return rows


def paired_markdown(rows: list[dict]) -> str:
    cells = [
        [
            f"{row['first']} - {'mean local-only model' if row['second'] == LOCAL else row['second']}",
            f"{row['mean_difference']:+.3f}",
            f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
            f"{row['wilcoxon_p']:.2g}",
            f"{row['seeds']} x {row['subjects']}",
        ]
        for row in rows
    ]
    return markdown_table(PAIRED_HEADERS, cells)


def _mean_or_none(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else None)


def personalised_rows(records: list[RunRecord]) -> list[dict]:
    """One row per method that has site scores: means over seeds (and their standard deviation)."""
    by_method: dict[str, list[RunRecord]] = {}
    for record in records:
        if record.ok and (record.personal or record.site_val_dice is not None):
            by_method.setdefault(record.method, []).append(record)
    rows = []
    for method, runs in by_method.items():
        if method == LOCAL:  # each site's own model is its personal model
            personal = [{"global_val": None, "personal_val": r.site_val_dice} for r in runs]
        else:
            personal = [r.personal or {"global_val": r.site_val_dice} for r in runs]
        row = {"method": method, "seeds": len(runs)}
        for key in ("global_val", "personal_val", "personal_heldout"):
            values = [p.get(key) for p in personal]
            row[key], row[f"{key}_sd"] = _mean_or_none(values)
        rows.append(row)
    return rows


def _cell(value: float | None, sd: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def personalised_markdown(rows: list[dict]) -> str:
    cells = [
        ["local (each site's own model)" if row["method"] == LOCAL else row["method"]]
        + [_cell(row[k], row[f"{k}_sd"]) for k in ("global_val", "personal_val", "personal_heldout")]
        for row in rows
    ]
    return markdown_table(PERSONAL_HEADERS, cells)


def copy_heatmaps(records: list[RunRecord], out: Path) -> list[Path]:
    """The first seed's cross-site heatmap of every method that wrote one, as ``cross_site_<method>.png``."""
    copied = []
    first_seed = min((r.seed for r in records if r.ok), default=None)
    for record in records:
        source = Path(record.run_dir) / CROSS_SITE_PNG
        if record.ok and record.seed == first_seed and source.is_file():
            target = out / f"cross_site_{record.method}.png"
            shutil.copyfile(source, target)
            copied.append(target)
    return copied
