"""A site's personal model (personalised FL): trained beside the global copy, scored beside it.

Methods with a personal model (FedBN, Ditto) say so through their client hooks
(:meth:`~fedtumor.federation.client_hooks.ClientHooks.load_personal`). On such a site the
evaluate reply carries, for the site's validation subjects,

- the global model's scores (the server's model as sent) under the plain names, ``dice_et``;
- the personal model's under ``personal_`` (``personal_dice_et``);
- when run-config key ``personal-heldout`` asks for it this round (``final``: the last round,
  or one after which early stopping may end the run, as the server's ``may-be-last-round``
  says; ``every-round``; ``never``) and the site can read the held-out test set (a simulation: same
  cohort; a deployed site has none and skips it), the personal model's held-out scores under
  ``personal_heldout_`` with ``num-heldout``.

The personal models never leave the site; only these numbers travel.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torchio as tio

from data_loaders.pipelines import model_input, regions_array, subject_spacing
from data_loaders.site import load_heldout
from fedtumor.core.config import RunConfig
from fedtumor.core.losses import build_loss
from fedtumor.core.optimizers import OptimizerSettings
from fedtumor.core.training import Batch, TrainStats, VolumeCase, evaluate_cases, train_site_round
from fedtumor.federation.client_hooks import ClientHooks, PersonalTrainer
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    MAY_BE_LAST_ROUND_KEY,
    NUM_HELDOUT_KEY,
    PERSONAL_HELDOUT_PREFIX,
    PERSONAL_PREFIX,
    SERVER_ROUND_KEY,
)

# Ray keeps a ClientApp's process alive across rounds: keep the preprocessed held-out cases.
_heldout_cache: dict[tuple, list[VolumeCase]] = {}


def volume_cases(subjects: Iterable[tio.Subject]) -> list[VolumeCase]:
    """Whole-volume cases as the server scores them."""
    return [VolumeCase(s["subject_id"], model_input(s), regions_array(s), subject_spacing(s)) for s in subjects]


def prefixed(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{name}": value for name, value in metrics.items()}


def site_scores(
    model: torch.nn.Module,
    hooks: ClientHooks,
    content: Mapping[str, Any],
    cases: Sequence[VolumeCase],
    patch_size: int,
    device: torch.device,
    heldout: Callable[[], Sequence[VolumeCase]] = list,
) -> dict[str, float]:
    """The evaluate reply's scores: the global model's and, where the hooks have one, the personal model's.

    ``model`` holds the global model as ``hooks.load_global`` loaded it; without a personal model
    it is scored as it is. ``heldout()`` gives the held-out cases to score the personal model on
    (none: not asked this round, or not readable here); it is called only for a personal model.

    Example::

        scores = site_scores(model, hooks, message.content, volume_cases(site.val), 48, device)
        scores["dice_et"], scores.get("personal_dice_et")
    """
    personal = copy.deepcopy(model)
    if not hooks.load_personal(personal, content):
        means, _, _ = evaluate_cases(model, cases, patch_size, device)
        return means
    model.load_state_dict(content[ARRAYS_KEY].to_torch_state_dict())  # the server's model itself
    means, _, _ = evaluate_cases(model, cases, patch_size, device)
    personal_means, _, _ = evaluate_cases(personal, cases, patch_size, device)
    scores = {**means, **prefixed(personal_means, PERSONAL_PREFIX)}
    heldout_cases = heldout()
    if heldout_cases:
        heldout_means, _, _ = evaluate_cases(personal, heldout_cases, patch_size, device)
        scores.update(prefixed(heldout_means, PERSONAL_HELDOUT_PREFIX))
        scores[NUM_HELDOUT_KEY] = len(heldout_cases)
    return scores


def heldout_asked(config: RunConfig, round_config: Mapping[str, Any]) -> bool:
    """Whether ``personal-heldout`` asks for held-out scores of the personal model in this round."""
    if config.personal_heldout == "every-round":
        return True
    if config.personal_heldout != "final":
        return False
    last = int(round_config.get(SERVER_ROUND_KEY, 0)) == config.num_server_rounds
    return last or bool(round_config.get(MAY_BE_LAST_ROUND_KEY, False))  # early stopping may end the run here


def site_heldout_cases(
    config: RunConfig, node_config: Mapping[str, Any], round_config: Mapping[str, Any]
) -> list[VolumeCase]:
    """The held-out test cases a simulated site can read, when this round asks; none on a deployed site."""
    if not heldout_asked(config, round_config) or "data-dir" in node_config or "num-partitions" not in node_config:
        return []
    key = (tuple(sorted(config.to_run_config().items())), int(node_config["num-partitions"]))
    if key not in _heldout_cache:
        _heldout_cache.clear()
        _heldout_cache[key] = volume_cases(load_heldout(config, int(node_config["num-partitions"])))
    return _heldout_cache[key]


def personal_trainer(
    config: RunConfig,
    epoch_batches: Callable[[], Iterable[Batch]],
    epochs: int,
    device: torch.device,
    learning_rate: float,
) -> PersonalTrainer:
    """Local training of a personal model as the site trains the global copy: same patches, epochs, optimiser."""
    settings = OptimizerSettings.from_config(config)

    def train(model: torch.nn.Module, extra_loss) -> TrainStats:
        loss_fn = build_loss(config.loss)
        return train_site_round(
            model,
            epoch_batches,
            epochs,
            loss_fn,
            device,
            learning_rate=learning_rate,
            optimizer_settings=settings,
            extra_loss=extra_loss,
        ).stats

    return train
