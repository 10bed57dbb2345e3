"""Train one model on a fixed set of subjects in round-sized blocks and write a run folder.

A "round" of a baseline is the training a federated round does on the same subjects:
``local-epochs`` passes of ``samples-per-volume`` patches per subject, then the held-out
test set is scored, so its metrics.csv lines up round by round with a federated run's.
Differences from a federated client, on purpose: one optimiser (run-config ``optimizer``) for
the whole run (a non-federated model keeps its optimiser state), and no aggregation in between.
With ``early-stopping-patience`` set, the federation's rule applies to each round's mean Dice:
on the job's validation subjects with ``early-stopping-monitor='validation'`` (the held-out
set is then scored only where asked and at the round the run ends), else on the held-out set
(every round is then scored); the summary's ``stopped_early`` gives the round and epoch, and
``patches_seen`` the patches actually trained.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchio as tio
from rich.progress import Progress

from data_loaders.pipelines import model_input, regions_array, subject_spacing
from data_loaders.round_patches import round_patch_batches
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.core.losses import build_loss
from fedtumor.core.metrics import mean_dice
from fedtumor.core.model import build_model
from fedtumor.core.optimizers import OptimizerSettings
from fedtumor.core.training import SUMMARY_METRICS, VolumeCase, evaluate_cases, resolve_device, train_site_round
from fedtumor.run.best_model import BestModelKeeper
from fedtumor.run.checkpoint import save_checkpoint
from fedtumor.run.early_stopping import HELDOUT_MONITOR, VALIDATION_MONITOR, EarlyStopping
from fedtumor.run.files import FINAL_MODEL_FILE, HELDOUT_SUBJECTS_FILE
from fedtumor.run.plots import draw_run_plots
from fedtumor.run.writer import GLOBAL_SCOPE, RunWriter


@dataclass(frozen=True)
class BaselineJob:
    """One model to train: what it is called and which subjects it sees."""

    kind: str  # "centralized" or "local"
    patch_stream: str  # seeds the patches; a site id gives exactly that site's federated patches
    train_subjects: Sequence[tio.Subject]
    sites: Mapping[str, int]  # site id -> training subjects it contributes
    val_subjects: Sequence[tio.Subject] = ()  # what early-stopping-monitor='validation' scores


def test_cases(subjects: Sequence[tio.Subject]) -> list[VolumeCase]:
    """Held-out cases as the ServerApp scores them (whole volumes, BraTS regions, voxel spacing)."""
    return [VolumeCase(s["subject_id"], model_input(s), regions_array(s), subject_spacing(s)) for s in subjects]


def train_baseline(
    config: RunConfig,
    job: BaselineJob,
    cases: Sequence[VolumeCase],
    writer: RunWriter,
    progress: Progress | None = None,
    score_rounds: set[int] | None = None,
    initial_scores: dict[str, float] | None = None,
) -> tuple[dict, dict[int, dict[str, float]]]:
    """Train ``num-server-rounds`` x ``local-epochs`` epochs, scoring ``cases`` after every round.

    ``score_rounds`` limits the held-out scoring to those rounds (the last is always scored;
    with early stopping on the held-out set, every round is); by default they follow
    ``server-eval-every`` as a federation's do;
    ``initial_scores`` are round 0's scores when already known (every model with the same
    seed starts from the same weights). Writes config.json, metrics.csv (train and held-out
    test rows), the final and best models, the overlay case, summary.json and the plots;
    returns the summary and the held-out scores per scored round.
    """
    started = time.perf_counter()
    writer.write_config(
        {**config.to_run_config(), "baseline": job.kind, "num-sites": len(job.sites), "sites": dict(job.sites)}
    )
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)  # the same initial model as the federation's round 0
    model = build_model(config.model, config.base_filters)
    optimizer = OptimizerSettings.from_config(config).build(model.parameters(), config.learning_rate)
    on_validation = config.stops_on_validation
    monitor = VALIDATION_MONITOR if on_validation else HELDOUT_MONITOR
    stopper = EarlyStopping(config.early_stopping_patience, config.early_stopping_min_delta, monitor)
    val_cases = test_cases(job.val_subjects) if stopper.enabled and on_validation else []
    if stopper.enabled and on_validation and not val_cases:
        raise ConfigError(
            f"early-stopping-monitor='validation': {job.kind} {job.patch_stream} has no validation subjects"
        )
    if stopper.enabled and not on_validation:
        score_rounds = None  # the rule needs every round's held-out score
    elif score_rounds is None and config.server_eval_every != 1:  # as the ServerApp scores a federation
        every = config.server_eval_every
        score_rounds = {r for r in range(config.num_server_rounds + 1) if every and r % every == 0}
    patches_seen = 0
    loss_fn = build_loss(config.loss)
    rounds = config.num_server_rounds
    patches_per_round = len(job.train_subjects) * config.samples_per_volume * config.local_epochs
    round_task = patch_task = None
    if progress is not None:
        round_task = progress.add_task(f"{job.kind} {job.patch_stream}: rounds", total=rounds)
        patch_task = progress.add_task(f"{job.kind} {job.patch_stream}: patches", total=rounds * patches_per_round)

    def advance_patches(_loss: float) -> None:
        if progress is not None:
            progress.advance(patch_task, config.batch_size)

    history: dict[int, dict[str, float]] = {}
    val_final: dict | None = None  # the validation scores at the last validated round
    best = BestModelKeeper(writer, config, cases[0], rounds, record_round=False)
    for server_round in range(rounds + 1):
        if server_round >= 1:
            # Exactly a federated site's round on these subjects, but with the optimiser kept across rounds.
            epoch_batches = round_patch_batches(job.train_subjects, config, job.patch_stream, server_round)
            stats = train_site_round(
                model,
                epoch_batches,
                config.local_epochs,
                loss_fn,
                device,
                optimizer=optimizer,
                on_batch=advance_patches,
            ).stats
            patches_seen += stats.num_patches
            writer.add_metrics(
                round=server_round,
                scope=GLOBAL_SCOPE,
                split="train",
                metrics={"loss": stats.loss, "num_patches": stats.num_patches, "train_seconds": stats.seconds},
            )
        stop = False
        if val_cases and server_round >= 1:
            val_means = evaluate_cases(model, val_cases, config.patch_size, device)[0]
            writer.add_metrics(round=server_round, scope=GLOBAL_SCOPE, split="val", metrics=val_means)
            val_final = {"round": server_round, "num_val": len(val_cases), "mean_dice": mean_dice(val_means)}
            stop = stopper.update(server_round, val_final["mean_dice"])
        scored = stop or server_round == rounds or score_rounds is None or server_round in score_rounds
        if not scored:
            if progress is not None and server_round >= 1:
                progress.update(round_task, advance=1)
            continue
        kept = None
        if server_round == 0 and initial_scores is not None:
            means = dict(initial_scores)
        else:
            keep = best.keep_prediction_of(server_round)
            means, per_subject, kept = evaluate_cases(model, cases, config.patch_size, device, keep_prediction_of=keep)
            writer.write_json(HELDOUT_SUBJECTS_FILE, {"round": server_round, "subjects": per_subject})
        writer.add_metrics(round=server_round, scope=GLOBAL_SCOPE, split="test", metrics=means)
        history[server_round] = means
        best.observe(server_round, means, model.state_dict(), kept)
        if progress is not None and server_round >= 1:
            progress.update(round_task, advance=1)
            progress.update(patch_task, completed=server_round * patches_per_round)
        if server_round >= 1 and not val_cases:
            stop = stopper.update(server_round, mean_dice(means))
        if stop:
            break

    save_checkpoint(writer.model_path(FINAL_MODEL_FILE), model.state_dict(), config)
    summary = run_summary(config, job.kind, job.sites, history, time.perf_counter() - started)
    summary["patches_seen"] = patches_seen
    summary["stopped_early"] = stopped_early_report(stopper, config.local_epochs)
    summary["val_final"] = val_final
    writer.write_summary(summary)
    draw_run_plots(writer.run_dir)
    if progress is not None:
        progress.remove_task(round_task)
        progress.remove_task(patch_task)
    return summary, history


def run_summary(
    config: RunConfig,
    kind: str,
    sites: Mapping[str, int],
    history: Mapping[int, Mapping[str, float]],
    wall_time_s: float,
) -> dict:
    """summary.json in the ServerApp's format (strategy, rounds, wall time, final, best, sites)."""
    last = max(history)
    best_round = max((r for r in history if r >= 1), key=lambda r: mean_dice(history[r]), default=last)
    return {
        "strategy": kind,
        "baseline": kind,
        "rounds": config.num_server_rounds,
        "epochs_per_round": config.local_epochs,
        "wall_time_s": round(wall_time_s, 2),
        "num_nodes": 1,
        "sites": dict(sorted(sites.items())),
        "failed_replies": [],
        "final": {**{name: float(history[last][name]) for name in SUMMARY_METRICS}, "round": last},
        "best": {"round": best_round, "mean_dice": mean_dice(history[best_round])},
    }


def stopped_early_report(stopper: EarlyStopping, epochs_per_round: int) -> dict | None:
    """summary.json's ``stopped_early`` of a baseline: the federation's, plus the epoch it stopped after."""
    report = stopper.report()
    if report is None:
        return None
    return {
        **report,
        "epoch": report["round"] * epochs_per_round,
        "best_epoch": report["best_round"] * epochs_per_round,
    }


def mean_over_models(histories: Sequence[Mapping[Any, Mapping[str, float]]]) -> dict[Any, dict[str, float]]:
    """Per round (or per test subject: any key the models share), each metric averaged over several models."""
    rounds = sorted(set.intersection(*(set(h) for h in histories)))
    return {r: {name: float(np.mean([h[r][name] for h in histories])) for name in histories[0][r]} for r in rounds}
