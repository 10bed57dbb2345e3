"""Server-side evaluation of the global model on held-out subjects no site trains on."""

from __future__ import annotations

import torchio as tio
from flwr.app import ArrayRecord, MetricRecord

from data_loaders.pipelines import model_input, regions_array, subject_spacing
from fedtumor.core.config import RunConfig
from fedtumor.core.model import build_model
from fedtumor.core.training import VolumeCase, evaluate_cases, resolve_device
from fedtumor.federation.ledger import SiteLedger
from fedtumor.run.best_model import BestModelKeeper
from fedtumor.run.files import HELDOUT_SUBJECTS_FILE
from fedtumor.run.writer import RunWriter


class HeldoutEvaluator:
    """``evaluate_fn`` for Flower's ``Strategy.start``: scores, best model, overlay case."""

    def __init__(self, config: RunConfig, subjects: list[tio.Subject], writer: RunWriter, ledger: SiteLedger):
        self.config = config
        self.writer = writer
        self.ledger = ledger
        self.device = resolve_device(config.device)
        self.model = build_model(config.model, config.base_filters)
        self.cases = [
            VolumeCase(s["subject_id"], model_input(s), regions_array(s), subject_spacing(s)) for s in subjects
        ]
        self.best = BestModelKeeper(writer, config, self.cases[0], config.num_server_rounds, record_round=True)

    @property
    def best_mean_dice(self) -> float:
        return self.best.best_mean_dice

    @best_mean_dice.setter
    def best_mean_dice(self, value: float) -> None:  # a resumed run's best so far
        self.best.best_mean_dice = value

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        state = arrays.to_torch_state_dict()
        self.model.load_state_dict(state)
        keep = self.best.keep_prediction_of(server_round)
        means, per_subject, kept = evaluate_cases(self.model, self.cases, self.config.patch_size, self.device, keep)
        self.writer.add_metrics(round=server_round, scope="global", split="test", metrics=means)
        self.writer.write_json(HELDOUT_SUBJECTS_FILE, {"round": server_round, "subjects": per_subject})
        self.ledger.record_test(server_round, means)
        self.best.observe(server_round, means, state, kept)
        return MetricRecord(means)
