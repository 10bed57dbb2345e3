"""Server-side evaluation of the global model on held-out subjects no site trains on."""

from __future__ import annotations

import torchio as tio
from flwr.app import ArrayRecord, MetricRecord

from data_loaders.pipelines import model_input, regions_array, subject_spacing
from fedtumor.core.config import RunConfig
from fedtumor.core.metrics import mean_dice
from fedtumor.core.model import build_model
from fedtumor.core.regions import regions_to_labels
from fedtumor.core.training import VolumeCase, evaluate_cases, resolve_device
from fedtumor.federation.ledger import StudyRecorder
from fedtumor.run.checkpoint import save_checkpoint
from fedtumor.run.files import BEST_MODEL_FILE
from fedtumor.run.writer import RunWriter


class HeldoutEvaluator:
    """``evaluate_fn`` for Flower's ``Strategy.start``: scores, best model, overlay case."""

    def __init__(self, config: RunConfig, subjects: list[tio.Subject], writer: RunWriter, recorder: StudyRecorder):
        self.config = config
        self.writer = writer
        self.recorder = recorder
        self.device = resolve_device(config.device)
        self.model = build_model(config.model, config.base_filters)
        self.cases = [
            VolumeCase(s["subject_id"], model_input(s), regions_array(s), subject_spacing(s)) for s in subjects
        ]
        self.best_mean_dice = -1.0

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.recorder.check_round(server_round)
        state = arrays.to_torch_state_dict()
        self.model.load_state_dict(state)
        overlay_case = self.cases[0]
        means, _, kept = evaluate_cases(
            self.model, self.cases, self.config.patch_size, self.device, keep_prediction_of=overlay_case.subject_id
        )
        self.writer.add_metrics(round=server_round, scope="global", split="test", metrics=means)
        self.recorder.record_test(server_round, means)
        if server_round >= 1 and mean_dice(means) > self.best_mean_dice:
            self.best_mean_dice = mean_dice(means)
            save_checkpoint(self.writer.model_path(BEST_MODEL_FILE), state, self.config, server_round)
        if server_round == self.config.num_server_rounds:
            self.writer.write_overlay_case(
                subject_id=overlay_case.subject_id,
                image=overlay_case.image[3].numpy(),  # FLAIR shows the whole tumour
                reference=regions_to_labels(overlay_case.reference),
                prediction=kept,
                round=server_round,
            )
        return MetricRecord(means)
