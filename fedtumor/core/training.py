"""Local training and whole-volume evaluation loops (no Flower, no data layout code)."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from fedtumor.core.brats_scores import challenge_region_scores
from fedtumor.core.metrics import region_scores
from fedtumor.core.optimizers import OptimizerSettings
from fedtumor.core.regions import REGIONS, labels_to_regions, regions_to_labels

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainStats:
    loss: float  # mean loss over the last epoch
    num_patches: int  # patches seen over all epochs
    num_steps: int  # optimiser steps over all epochs (SCAFFOLD needs it)
    seconds: float


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks the GPU when one is present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(name)


def train_epochs(
    model: torch.nn.Module,
    epoch_batches: Callable[[], Iterable[Batch]],
    epochs: int,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    on_batch: Callable[[float], None] | None = None,
    extra_loss: Callable[[torch.nn.Module], torch.Tensor | None] | None = None,
    before_step: Callable[[torch.nn.Module], None] | None = None,
) -> TrainStats:
    """Train for ``epochs`` passes over ``epoch_batches()``; mixed precision on CUDA.

    ``extra_loss`` adds a term to each batch's loss (e.g. FedProx's proximal term) and
    ``before_step`` may edit gradients after ``backward()`` (e.g. SCAFFOLD's correction).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    model.to(device).train()
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = time.perf_counter()
    seen = steps = 0
    last_epoch_losses: list[float] = []
    for _ in range(epochs):
        last_epoch_losses = []
        for inputs, targets in epoch_batches():
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                loss = loss_fn(model(inputs), targets)
            if extra_loss is not None and (extra := extra_loss(model)) is not None:
                loss = loss + extra
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()}")
            scaler.scale(loss).backward()
            if before_step is not None:
                scaler.unscale_(optimizer)  # hooks see true gradients
                before_step(model)
            scaler.step(optimizer)
            scaler.update()
            seen += inputs.shape[0]
            steps += 1
            last_epoch_losses.append(loss.item())
            if on_batch is not None:
                on_batch(loss.item())
    mean_loss = float(np.mean(last_epoch_losses)) if last_epoch_losses else float("nan")
    return TrainStats(loss=mean_loss, num_patches=seen, num_steps=steps, seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class SiteRound:
    """One site's round of local training: the loop's stats and, when probed, the loss before and after."""

    stats: TrainStats
    loss_before: float | None = None
    loss_after: float | None = None


def train_site_round(
    model: torch.nn.Module,
    epoch_batches: Callable[[], Iterable[Batch]],
    epochs: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    *,
    learning_rate: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    optimizer_settings: OptimizerSettings | None = None,
    probe_loss_change: bool = False,
    extra_loss: Callable[[torch.nn.Module], torch.Tensor | None] | None = None,
    before_step: Callable[[torch.nn.Module], None] | None = None,
    on_batch: Callable[[float], None] | None = None,
) -> SiteRound:
    """One site's round: ``epochs`` passes over ``epoch_batches()`` (one epoch of patches per call).

    The federated ClientApp, the baselines and the overhead bench all train through here, on
    patches the caller has seeded and queued (``data_loaders.round_patches``), so they train alike.
    With ``probe_loss_change`` one extra pass, drawn before training, is kept as fixed probe
    patches, scored in eval mode before and after (cost-weighted strategies). Give either
    ``learning_rate`` (a fresh optimiser of ``optimizer_settings``, default Adam, built after the
    probe, as a federated site does every round) or ``optimizer`` (one kept across rounds, as
    the baselines do).
    """
    if (learning_rate is None) == (optimizer is None):
        raise ValueError("give exactly one of learning_rate (a fresh optimiser) and optimizer")
    probe = loss_before = None
    if probe_loss_change:
        probe = list(epoch_batches())
        loss_before = mean_loss(model, probe, loss_fn, device)
    if optimizer is None:
        optimizer = (optimizer_settings or OptimizerSettings()).build(model.parameters(), learning_rate)
    stats = train_epochs(
        model,
        epoch_batches,
        epochs,
        optimizer,
        loss_fn,
        device,
        on_batch=on_batch,
        extra_loss=extra_loss,
        before_step=before_step,
    )
    if probe is None:
        return SiteRound(stats)
    return SiteRound(stats, loss_before, mean_loss(model, probe, loss_fn, device))


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
) -> float:
    """Mean loss of ``model`` over ``batches`` without training (FedCostWAvg's cost before)."""
    model.to(device).eval()
    losses = []
    for inputs, targets in batches:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            losses.append(loss_fn(model(inputs.to(device)), targets.to(device)).item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def predict_labels(model: torch.nn.Module, image: torch.Tensor, patch_size: int, device: torch.device) -> np.ndarray:
    """Whole-volume BraTS 2021 labels for a (4, X, Y, Z) input, by MONAI sliding-window inference.

    Regions are thresholded at 0.5 and made nested (ET in TC in WT) through the label map,
    so what is scored is exactly what a BraTS submission would contain.
    """
    model.to(device).eval()
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        logits = sliding_window_inference(
            image[None].to(device),
            roi_size=(patch_size,) * 3,
            sw_batch_size=1,
            predictor=model,
            overlap=0.25,
            mode="gaussian",
        )
    regions = (torch.sigmoid(logits[0].float()) > 0.5).cpu().numpy()
    return regions_to_labels(regions)


# The held-out scores a run summary reports: the legacy BraTS 2017-2021 ones, then the BraTS 2023 lesion-wise.
SUMMARY_METRICS = (
    "dice_et", "dice_tc", "dice_wt", "hd95_et", "hd95_tc", "hd95_wt",
    "lesion_dice_et", "lesion_dice_tc", "lesion_dice_wt", "lesion_hd95_et", "lesion_hd95_tc", "lesion_hd95_wt",
)  # fmt: skip


@dataclass(frozen=True)
class VolumeCase:
    subject_id: str
    image: torch.Tensor  # (4, X, Y, Z)
    reference: np.ndarray  # (3, X, Y, Z) bool regions ET, TC, WT
    spacing: tuple[float, float, float]


def evaluate_cases(
    model: torch.nn.Module,
    cases: Iterable[VolumeCase],
    patch_size: int,
    device: torch.device,
    keep_prediction_of: str | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]], np.ndarray | None]:
    """Score whole volumes; returns (mean metrics, per-subject metrics, one kept prediction).

    Metric names are flat, e.g. ``dice_et`` and ``hd95_wt``, ready for a MetricRecord: the
    legacy ``dice|hd95|sensitivity|specificity_<region>`` first, then the BraTS 2023+
    ``nsd|lesion_dice|lesion_hd95_<region>`` (:mod:`fedtumor.core.brats_scores`).
    """
    per_subject: dict[str, dict[str, float]] = {}
    kept = None
    for case in cases:
        labels = predict_labels(model, case.image, patch_size, device)
        predicted = labels_to_regions(labels)
        legacy = region_scores(predicted, case.reference, case.spacing)
        challenge = challenge_region_scores(predicted, case.reference, case.spacing)
        per_subject[case.subject_id] = flatten_scores(legacy) | flatten_scores(challenge)
        if case.subject_id == keep_prediction_of:
            kept = labels
    if not per_subject:
        return {}, {}, None
    names = next(iter(per_subject.values())).keys()
    means = {name: float(np.mean([s[name] for s in per_subject.values()])) for name in names}
    return means, per_subject, kept


def flatten_scores(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"ET": {"dice": x}}`` -> ``{"dice_et": x}``."""
    return {
        f"{metric}_{region.lower()}": float(value) for region in REGIONS for metric, value in scores[region].items()
    }


def patch_seed(seed: int, stream: str, server_round: int) -> int:
    """The torch seed for one site's patches in one round: reproducible, different across sites and rounds.

    The federated ClientApp and the baselines use the same seed, so a baseline that trains on
    a site's data (``stream`` = its site id) draws exactly that site's federated patches.
    """
    return zlib.crc32(f"{seed}/{stream}/{server_round}".encode())
