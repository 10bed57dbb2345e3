"""Local-only baselines: one model per site, trained on that site alone.

Writes one run folder per site (``<run>/site-k/``) and, in ``<run>/`` itself, a run folder
of the mean local model: its metrics.csv has each site model's held-out test scores (scope
``site-k``) and their mean (scope ``global``) per round; summary.json the mean and each
site's final scores. With ``cross-site-eval`` on, ``<run>/`` also gets the cross-site matrix:
each site's final local model scored on every site's validation subjects (docs/evaluation.md).
The summary also has the patches all site models trained on and, with early stopping, where
each stopped; a site model that stopped early keeps its last scores in the later rounds of the
mean (it no longer changes).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.progress import Progress

from fedtumor.baselines.cross_site import local_models, score_on_sites
from fedtumor.baselines.sites import load_sites, load_test_subjects
from fedtumor.baselines.trainer import BaselineJob, mean_over_models, run_summary, test_cases, train_baseline
from fedtumor.core.config import RunConfig
from fedtumor.run.cross_site import matrix_cells, write_cross_site
from fedtumor.run.plots import draw_run_plots
from fedtumor.run.tracking import open_tracker
from fedtumor.run.writer import GLOBAL_SCOPE, RunWriter


def run_local(
    config: RunConfig,
    n_sites: int,
    run_dir: Path,
    progress: Progress | None = None,
    only_sites: list[str] | None = None,
    score_every_round: bool = True,
) -> dict:
    """Train each site's own model on the same budget it spends in a federation; returns the summary.

    With ``score_every_round=False`` each site model is scored on the held-out set only at
    round 0 (once: every site model starts from the same weights) and after the last round,
    which makes the baseline of a many-site study affordable on a CPU.
    """
    started = time.perf_counter()
    sites = load_sites(config, n_sites)
    if only_sites:
        unknown = sorted(set(only_sites) - {site.site_id for site in sites})
        if unknown:
            known = ", ".join(site.site_id for site in sites)
            raise ValueError(f"no site {unknown[0]} in this cohort (sites: {known})")
        sites = [site for site in sites if site.site_id in only_sites]
    cases = test_cases(load_test_subjects(config, n_sites))
    writer = RunWriter(run_dir, tracker=open_tracker(config, run_dir))  # the mean local model; sites untracked
    writer.write_config(
        {
            **config.to_run_config(),
            "baseline": "local",
            "num-sites": len(sites),
            "sites": [s.site_id for s in sites],
            "cohort-sites": n_sites,  # all of the cohort's, when --only trained fewer (fedtumor cross-site)
        }
    )
    site_task = progress.add_task("local: sites", total=len(sites)) if progress is not None else None
    per_site_final: dict[str, dict] = {}
    per_site_stopped: dict[str, dict | None] = {}
    per_site_val: dict[str, dict | None] = {}  # each site model on its own validation subjects, when monitored
    patches_seen = 0
    histories = []
    score_rounds = None if score_every_round else {0, config.num_server_rounds}
    initial_scores = None
    for site in sites:
        job = BaselineJob(
            kind="local",
            patch_stream=site.site_id,  # the same patches the site draws in each federated round
            train_subjects=site.train,
            sites={site.site_id: len(site.train)},
            val_subjects=site.val,  # a site alone can only stop on its own validation subjects
        )
        summary, history = train_baseline(
            config, job, cases, RunWriter(run_dir / site.site_id), progress, score_rounds, initial_scores
        )
        initial_scores = history[0]
        per_site_final[site.site_id] = summary["final"]
        per_site_stopped[site.site_id] = summary["stopped_early"]
        per_site_val[site.site_id] = summary["val_final"]
        patches_seen += summary["patches_seen"]
        histories.append(held_to_the_end(history, config.num_server_rounds))  # site rows: only rounds it ran
        for server_round, means in history.items():
            writer.add_metrics(round=server_round, scope=site.site_id, split="test", metrics=means)
        if progress is not None:
            progress.advance(site_task)
    mean_history = mean_over_models(histories)
    for server_round, means in mean_history.items():
        writer.add_metrics(round=server_round, scope=GLOBAL_SCOPE, split="test", metrics=means)
    summary = run_summary(
        config, "local", {site.site_id: len(site.train) for site in sites}, mean_history, time.perf_counter() - started
    )
    summary["num_nodes"] = len(sites)
    summary["per_site_final"] = per_site_final
    summary["patches_seen"] = patches_seen
    summary["per_site_stopped_early"] = per_site_stopped
    summary["per_site_val"] = per_site_val
    if config.cross_site_eval:  # every site's data is at hand here: each local model on every site
        scores = score_on_sites(local_models(run_dir, [site.site_id for site in sites]), sites, config, progress)
        write_cross_site(run_dir, scores, title="Cross-site evaluation (local-only models)")
        summary["cross_site"] = {"share_personal": False, "mean_dice": matrix_cells(scores)}
    writer.write_summary(summary)
    draw_run_plots(run_dir)
    if progress is not None:
        progress.remove_task(site_task)
    return summary


def held_to_the_end(history: dict[int, dict[str, float]], last_round: int) -> dict[int, dict[str, float]]:
    """A model that stopped early, scored on as at its last round up to ``last_round`` (it no longer changes)."""
    stopped = max(history)
    return {**history, **{r: history[stopped] for r in range(stopped + 1, last_round + 1)}}
