"""The best model and the overlay case of a run folder, kept the same way by the ServerApp and the baselines."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedtumor.core.config import RunConfig
from fedtumor.core.metrics import mean_dice
from fedtumor.core.regions import regions_to_labels
from fedtumor.core.training import VolumeCase
from fedtumor.run.checkpoint import save_checkpoint
from fedtumor.run.files import BEST_MODEL_FILE
from fedtumor.run.writer import RunWriter

FLAIR_CHANNEL = 3  # FLAIR shows the whole tumour


class BestModelKeeper:
    """Writes best_model.pt when a round (from 1 on) beats the best mean Dice so far; the overlay case at the last.

    ``record_round`` says whether best_model.pt records its round: the ServerApp's does (the audit
    log checks the file against it), the baselines' never has.
    """

    def __init__(
        self, writer: RunWriter, config: RunConfig, overlay_case: VolumeCase, last_round: int, record_round: bool
    ):
        self.writer = writer
        self.config = config
        self.overlay_case = overlay_case
        self.last_round = last_round
        self.record_round = record_round
        self.best_mean_dice = -1.0  # a resumed run sets the best it had

    def keep_prediction_of(self, server_round: int) -> str | None:
        """The subject whose prediction ``evaluate_cases`` must keep in this round (the overlay case, at the last)."""
        return self.overlay_case.subject_id if server_round == self.last_round else None

    def observe(
        self,
        server_round: int,
        means: Mapping[str, float],
        state_dict: dict[str, torch.Tensor],
        prediction: np.ndarray | None,
    ) -> None:
        """One scored round: its mean metrics, the model scored and the overlay case's kept prediction."""
        if server_round >= 1 and mean_dice(means) > self.best_mean_dice:
            self.best_mean_dice = mean_dice(means)
            saved_round = server_round if self.record_round else None
            save_checkpoint(self.writer.model_path(BEST_MODEL_FILE), state_dict, self.config, saved_round)
        if server_round == self.last_round:
            self.writer.write_overlay_case(
                subject_id=self.overlay_case.subject_id,
                image=self.overlay_case.image[FLAIR_CHANNEL].numpy(),
                reference=regions_to_labels(self.overlay_case.reference),
                prediction=prediction,
                round=server_round,
            )
