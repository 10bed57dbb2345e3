"""FedAvg-FT: each site fine-tunes a run's final global model on its own training subjects.

The personalised-FL baseline of Ditto and FedBN (Li et al. 2021 compare against it): after a
federated run, every site trains a copy of the final global model for ``epochs`` passes over
its training patches (one fresh optimiser of the run's ``optimizer`` settings at its
``learning-rate``), then the global and the fine-tuned model are scored on the site's
validation subjects and on the held-out test set. Writes, in a folder of its own,
``summary.json`` (global and personalised scores per site and their means, in the shape of a
run summary's ``personalised`` section) and ``fine_tune.png`` (mean Dice per site, both models).

Example::

    summary = run_fine_tune(Path("runs/fedavg-demo"), epochs=2, out_dir=Path("runs/fedavg-demo-fine-tune"))
    summary["mean"]["personal_val"]["mean_dice"]
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from data_loaders.round_patches import round_patch_batches
from fedtumor.baselines.sites import load_sites, load_test_subjects
from fedtumor.baselines.trainer import test_cases
from fedtumor.core.config import RunConfig, load_run_config, parse_overrides
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.core.losses import build_loss
from fedtumor.core.optimizers import OptimizerSettings
from fedtumor.core.training import evaluate_cases, resolve_device, train_site_round
from fedtumor.federation.personalised import score_summary, site_means
from fedtumor.run.checkpoint import load_checkpoint
from fedtumor.run.files import CONFIG_FILE, FINAL_MODEL_FILE
from fedtumor.run.writer import RunWriter

FINE_TUNE_PNG = "fine_tune.png"
PATCH_STREAM = "fine-tune"  # seeds the fine-tuning patches apart from the federated rounds'
_RUN_ONLY_KEYS = ("num-nodes", "run-id")  # config.json entries that are not run-config keys


def run_config_of(run_dir: Path, overrides: str = "") -> tuple[RunConfig, int]:
    """(the run's own config with ``overrides`` on top, its number of sites) from its config.json."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        saved = dict(json.loads(path.read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"no readable run config ({type(exc).__name__})", path=path) from None
    n_sites = saved.get("num-nodes")
    if not isinstance(n_sites, int) or n_sites < 1:
        raise DataError("config.json has no 'num-nodes' (not a federated run folder)", path=path)
    values = {key: value for key, value in saved.items() if key not in _RUN_ONLY_KEYS}
    return load_run_config({**values, **parse_overrides(overrides)}), n_sites


def fine_tune(model: torch.nn.Module, site, config: RunConfig, epochs: int, device, on_batch=None) -> torch.nn.Module:
    """A copy of ``model`` trained ``epochs`` passes over ``site``'s training patches."""
    tuned = copy.deepcopy(model)
    epoch_batches = round_patch_batches(site.train, config, f"{site.site_id}/{PATCH_STREAM}", config.num_server_rounds)
    train_site_round(
        tuned,
        epoch_batches,
        epochs,
        build_loss(config.loss),
        device,
        learning_rate=config.learning_rate,
        optimizer_settings=OptimizerSettings.from_config(config),
        on_batch=on_batch,
    )
    return tuned


def run_fine_tune(
    run_dir: Path, epochs: int, out_dir: Path, overrides: str = "", progress: Progress | None = None
) -> dict[str, Any]:
    """Fine-tune the run's final model on every site, score both models, write ``out_dir``; the summary."""
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    started = time.perf_counter()
    run_dir = Path(run_dir)
    config, n_sites = run_config_of(run_dir, overrides)
    global_model, meta = load_checkpoint(run_dir / FINAL_MODEL_FILE)
    if (meta.get("model"), meta.get("base_filters")) != (config.model, config.base_filters):
        raise ConfigError(f"{run_dir / FINAL_MODEL_FILE} is a {meta.get('model')} model, the config a {config.model}")
    device = resolve_device(config.device)
    sites = load_sites(config, n_sites)
    heldout = test_cases(load_test_subjects(config, n_sites))
    writer = RunWriter(out_dir)
    writer.write_config({**config.to_run_config(), "baseline": "fedavg-ft", "run": str(run_dir), "epochs": epochs})
    patches = sum(len(site.train) for site in sites) * config.samples_per_volume * epochs
    task = progress.add_task("fine-tune: patches", total=patches) if progress is not None else None

    def advance(_loss: float) -> None:
        if progress is not None:
            progress.advance(task, config.batch_size)

    global_heldout = score_summary(evaluate_cases(global_model, heldout, config.patch_size, device)[0])
    per_site: dict[str, dict] = {}
    for site in sites:
        val = test_cases(site.val)
        tuned = fine_tune(global_model, site, config, epochs, device, advance)
        per_site[site.site_id] = {
            "num_val": len(site.val),
            "global_val": score_summary(evaluate_cases(global_model, val, config.patch_size, device)[0]),
            "personal_val": score_summary(evaluate_cases(tuned, val, config.patch_size, device)[0]),
            "personal_heldout": score_summary(evaluate_cases(tuned, heldout, config.patch_size, device)[0]),
        }
    rows = list(per_site.values())
    weights = [float(row["num_val"]) for row in rows]
    summary = {
        "baseline": "fedavg-ft",
        "run": str(run_dir),
        "strategy": config.strategy,
        "epochs": epochs,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "patches_seen": patches,
        "sites": per_site,
        "mean": {
            "global_val": site_means([row["global_val"] for row in rows], weights),
            "personal_val": site_means([row["personal_val"] for row in rows], weights),
            "personal_heldout": site_means([row["personal_heldout"] for row in rows]),
        },
        "personal_heldout": "measured",
        "global_heldout": global_heldout,
    }
    writer.write_summary(summary)
    draw_fine_tune_plot(summary, Path(out_dir) / FINE_TUNE_PNG)
    return summary


def draw_fine_tune_plot(summary: dict[str, Any], path: Path) -> Path:
    """Mean Dice of the global and the fine-tuned model per site (validation), bars side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = list(summary["sites"])
    x = range(len(sites))
    figure, axes = plt.subplots(figsize=(max(4.0, 1.2 * len(sites) + 2), 3.5))
    for offset, key, label in ((-0.2, "global_val", "global"), (0.2, "personal_val", "fine-tuned")):
        values = [summary["sites"][site][key]["mean_dice"] for site in sites]
        axes.bar([i + offset for i in x], values, width=0.4, label=label)
    axes.set_xticks(list(x), sites)
    axes.set_ylim(0, 1)
    axes.set_ylabel("mean Dice (validation)")
    axes.set_title(f"FedAvg-FT: {summary['epochs']} epochs of local fine-tuning")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
