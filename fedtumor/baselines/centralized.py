"""The pooled-data upper bound: one model on every site's training subjects at once."""

from __future__ import annotations

from pathlib import Path

from rich.progress import Progress

from fedtumor.baselines.sites import load_sites, load_test_subjects
from fedtumor.baselines.trainer import BaselineJob, test_cases, train_baseline
from fedtumor.core.config import RunConfig
from fedtumor.run.tracking import open_tracker
from fedtumor.run.writer import RunWriter


def run_centralized(config: RunConfig, n_sites: int, run_dir: Path, progress: Progress | None = None) -> dict:
    """Train on the union of the sites' training subjects (their validation subjects stay out, for early stopping).

    Same budget as the federation: each round is ``local-epochs`` passes over all of them,
    which is the patches every site trains on in one federated round, added up.
    """
    sites = load_sites(config, n_sites)
    cases = test_cases(load_test_subjects(config, n_sites))
    job = BaselineJob(
        kind="centralized",
        patch_stream="pooled",
        train_subjects=[subject for site in sites for subject in site.train],
        sites={site.site_id: len(site.train) for site in sites},
        val_subjects=[subject for site in sites for subject in site.val],
    )
    summary, _ = train_baseline(config, job, cases, RunWriter(run_dir, tracker=open_tracker(config, run_dir)), progress)
    return summary
