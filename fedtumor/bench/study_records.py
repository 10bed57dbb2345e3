"""What the study reads back from a finished run folder: scores per test subject, stop round, site scores.

Every method's run folder has the same files (``summary.json``, ``metrics.csv``,
``heldout_subjects.json``), so one reader serves the federations and the baselines:

- the held-out scores of the final model, subject by subject (the local-only baseline: each
  subject's scores averaged over the site models, the "mean local model");
- the round it stopped at and the patches it trained on;
- its mean Dice per round, for the study's curves: on the held-out set, or (a study that stops
  on validation scores the held-out set only at the end) on the sites' validation subjects;
- its score on the sites' own validation subjects (weighted by their subjects, as Flower
  aggregates them): the global model for a federation, each site's own model for local-only;
- for a method with personal models (FedBN, Ditto, FedAvg-FT), the personal models' scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedtumor.baselines.trainer import mean_over_models
from fedtumor.core.metrics import mean_dice
from fedtumor.federation.wire import PERSONAL_PREFIX
from fedtumor.run.files import HELDOUT_SUBJECTS_FILE
from fedtumor.run.writer import GLOBAL_SCOPE, metric_table, read_metrics


def heldout_per_subject(run_dir: Path) -> dict[str, dict[str, float]]:
    """``{subject: {metric: value}}`` of the run's last held-out scoring; {} when it has none."""
    path = Path(run_dir) / HELDOUT_SUBJECTS_FILE
    if not path.is_file():
        return {}
    return {subject: dict(scores) for subject, scores in json.loads(path.read_text())["subjects"].items()}


def mean_over_site_models(site_scores: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each subject's scores averaged over several models (the mean local-only model), subject by subject."""
    return mean_over_models(site_scores) if site_scores else {}


def stop_round(summary: dict[str, Any]) -> int | None:
    """The round the run's final model comes from (its early stop, else its last round)."""
    stopped = summary.get("stopped_early")
    if stopped:
        return int(stopped["round"])
    final_round = summary.get("final", {}).get("round")
    return None if final_round is None else int(final_round)


def _weighted(values: list[tuple[float, float]]) -> float | None:
    total = sum(weight for _, weight in values)
    return sum(value * weight for value, weight in values) / total if values and total > 0 else None


def site_validation_dice(run_dir: Path, summary: dict[str, Any]) -> float | None:
    """Mean Dice on the sites' own validation subjects at the final round; None when not measured.

    A federation: its global model, the weighted mean Flower aggregates; the local-only baseline:
    each site's own model on its own subjects, weighted the same way; pooled: its validation set.
    """
    if "per_site_val" in summary:  # local-only
        rows = [row for row in summary["per_site_val"].values() if row]
        return _weighted([(row["mean_dice"], row["num_val"]) for row in rows])
    if summary.get("val_final"):  # pooled
        return float(summary["val_final"]["mean_dice"])
    val = metric_table(read_metrics(run_dir), GLOBAL_SCOPE, "val")
    final_round = stop_round(summary)
    if val.empty or final_round not in val.index:
        return None
    return mean_dice(val.loc[final_round])


def dice_per_round(run_dir: Path, summary: dict[str, Any], split: str, personal: bool = False) -> dict[int, float]:
    """Mean Dice per round on ``split`` ("test": held-out, "val": the sites' validation subjects).

    On validation, the local-only baseline is each site model on its own subjects, weighted by
    them (a site model that stopped early held at its last score), and ``personal`` reads the
    personal models' scores (FedBN's sites) instead of the global model's.
    """
    if split == "val" and "per_site_val" in summary:
        curves = []
        for site, final in summary["per_site_val"].items():
            table = metric_table(read_metrics(Path(run_dir) / site), GLOBAL_SCOPE, "val")
            if final and not table.empty:
                curves.append(({int(r): mean_dice(row) for r, row in table.iterrows()}, final["num_val"]))
        last = max((max(curve) for curve, _ in curves), default=0)
        held = [({r: curve[min(r, max(curve))] for r in range(min(curve), last + 1)}, n) for curve, n in curves]
        rounds = set.intersection(*(set(curve) for curve, _ in held)) if held else set()
        return {r: _weighted([(curve[r], n) for curve, n in held]) for r in sorted(rounds)}
    table = metric_table(read_metrics(Path(run_dir)), GLOBAL_SCOPE, split)
    if personal:
        table = table[[c for c in table.columns if c.startswith(PERSONAL_PREFIX)]]
        table.columns = [c.removeprefix(PERSONAL_PREFIX) for c in table.columns]
    return {int(r): mean_dice(row) for r, row in table.dropna().iterrows()} if not table.empty else {}


def personal_scores(summary: dict[str, Any]) -> dict[str, float | None] | None:
    """Mean Dice of the global and personal models on the sites' validation, and the personal on held-out.

    Read from a federation's ``personalised`` section or a FedAvg-FT summary; None without personal models.
    """
    section = summary.get("personalised", summary if summary.get("baseline") == "fedavg-ft" else None)
    if not section:
        return None
    means = section["mean"]

    def dice(name: str) -> float | None:
        return None if not means.get(name) else float(means[name]["mean_dice"])

    return {
        "global_val": dice("global_val"),
        "personal_val": dice("personal_val"),
        "personal_heldout": dice("personal_heldout"),
    }
