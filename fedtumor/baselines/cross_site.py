"""Cross-site scores computed in one process: models with every site's validation subjects at hand.

The local-only baseline (its site models) and ``fedtumor cross-site`` on a finished run (the
models its folder holds) score here what a federation's sites score in their ClientApps
(client_app/cross_site.py): the same metrics on the same validation subjects.

Example::

    scores = score_on_sites({"site-1 local": model}, load_sites(config, 2), config)
    write_cross_site(run_dir, scores, title="Local-only models")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from rich.progress import Progress

from data_loaders.site import SiteData
from fedtumor.baselines.trainer import test_cases
from fedtumor.core.config import RunConfig
from fedtumor.core.training import evaluate_cases, resolve_device
from fedtumor.run.checkpoint import load_checkpoint
from fedtumor.run.cross_site import cross_site_metrics, local_model
from fedtumor.run.files import FINAL_MODEL_FILE


def score_on_sites(
    models: Mapping[str, torch.nn.Module],
    sites: Sequence[SiteData],
    config: RunConfig,
    progress: Progress | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{model label: {site id: scores}}``: each model on each site's validation subjects.

    A site without validation subjects gets no cell (as a federated site replies no scores).
    """
    if not models or not sites:
        raise ValueError(f"cross-site scoring needs models and sites, got {len(models)} models, {len(sites)} sites")
    device = resolve_device(config.device)
    site_cases = {site.site_id: test_cases(site.val) for site in sites}
    task = None
    if progress is not None:
        task = progress.add_task("cross-site: models x sites", total=len(models) * len(sites))
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for label, model in models.items():
        scores[label] = {}
        for site_id, cases in site_cases.items():
            if cases:
                means, _, _ = evaluate_cases(model, cases, config.patch_size, device)
                scores[label][site_id] = cross_site_metrics(means)
            if progress is not None:
                progress.advance(task)
    if progress is not None:
        progress.remove_task(task)
    return scores


def local_models(run_dir: Path, site_ids: Sequence[str]) -> dict[str, torch.nn.Module]:
    """The final model of each site of a local-only baseline run (``<run>/<site-id>/final_model.pt``)."""
    return {
        local_model(site_id): load_checkpoint(Path(run_dir) / site_id / FINAL_MODEL_FILE)[0] for site_id in site_ids
    }
