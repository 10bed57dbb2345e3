"""best_model.pt and overlay_case.npz as the ServerApp and the baselines keep them."""

import numpy as np
import pytest
import torch

from fedtumor.core.config import RunConfig
from fedtumor.core.regions import labels_to_regions
from fedtumor.core.training import VolumeCase
from fedtumor.run.best_model import BestModelKeeper
from fedtumor.run.files import BEST_MODEL_FILE, OVERLAY_FILE
from fedtumor.run.writer import RunWriter

CONFIG = RunConfig(model="unet", base_filters=4, patch_size=32)


def scores(dice: float) -> dict[str, float]:
    return {"dice_et": dice, "dice_tc": dice, "dice_wt": dice, "hd95_wt": 3.0}


def state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2,), value)}


def overlay_case() -> VolumeCase:
    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 2  # oedema
    labels[2, 2, 2] = 4  # enhancing tumour inside it
    image = torch.arange(4 * 4 * 5 * 6, dtype=torch.float32).reshape(4, 4, 5, 6)
    return VolumeCase("case-7", image, labels_to_regions(labels), (1.0, 1.0, 1.0)), labels


def saved(run_dir):
    return torch.load(run_dir / BEST_MODEL_FILE, map_location="cpu", weights_only=True)


def test_the_best_model_is_the_best_mean_dice_from_round_1_on(tmp_path):
    case, _ = overlay_case()
    keeper = BestModelKeeper(RunWriter(tmp_path), CONFIG, case, last_round=4, record_round=True)
    keeper.observe(0, scores(0.9), state(0.0), None)  # round 0 is the initial model: never kept
    assert not (tmp_path / BEST_MODEL_FILE).exists()
    keeper.observe(1, scores(0.2), state(1.0), None)
    assert saved(tmp_path)["round"] == 1 and torch.equal(saved(tmp_path)["state_dict"]["w"], state(1.0)["w"])
    keeper.observe(2, scores(0.5), state(2.0), None)
    keeper.observe(3, scores(0.5), state(3.0), None)  # a tie is no improvement
    payload = saved(tmp_path)
    assert payload["round"] == 2 and torch.equal(payload["state_dict"]["w"], state(2.0)["w"])
    assert payload["model"] == "unet" and payload["base_filters"] == 4 and keeper.best_mean_dice == 0.5
    assert not (tmp_path / OVERLAY_FILE).exists()  # only the last round writes it


def test_a_resumed_best_is_what_later_rounds_must_beat(tmp_path):
    case, _ = overlay_case()
    keeper = BestModelKeeper(RunWriter(tmp_path), CONFIG, case, last_round=4, record_round=True)
    keeper.best_mean_dice = 0.7
    keeper.observe(3, scores(0.6), state(3.0), None)
    assert not (tmp_path / BEST_MODEL_FILE).exists()


def test_a_baselines_best_model_records_no_round(tmp_path):
    case, _ = overlay_case()
    keeper = BestModelKeeper(RunWriter(tmp_path), CONFIG, case, last_round=2, record_round=False)
    keeper.observe(1, scores(0.3), state(1.0), None)
    assert saved(tmp_path)["round"] is None


def test_the_last_round_writes_the_overlay_case_with_flair_reference_and_kept_prediction(tmp_path):
    case, labels = overlay_case()
    keeper = BestModelKeeper(RunWriter(tmp_path), CONFIG, case, last_round=2, record_round=True)
    assert keeper.keep_prediction_of(1) is None and keeper.keep_prediction_of(2) == "case-7"
    prediction = np.zeros_like(labels)
    prediction[2, 2, 2] = 1
    keeper.observe(2, scores(0.4), state(2.0), prediction)
    with np.load(tmp_path / OVERLAY_FILE) as overlay:
        assert str(overlay["subject_id"]) == "case-7" and int(overlay["round"]) == 2
        assert np.array_equal(overlay["image"], case.image[3].numpy())  # FLAIR, channel 3
        assert np.array_equal(overlay["reference"], labels)
        assert np.array_equal(overlay["prediction"], prediction)
    assert saved(tmp_path)["round"] == 2


def test_the_overlay_needs_the_kept_prediction(tmp_path):
    case, _ = overlay_case()
    keeper = BestModelKeeper(RunWriter(tmp_path), CONFIG, case, last_round=1, record_round=True)
    with pytest.raises(ValueError, match="overlay case case-7"):
        keeper.observe(1, scores(0.4), state(1.0), None)
