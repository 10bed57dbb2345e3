"""Network factory, losses, the training loop and sliding-window inference on tiny inputs."""

import numpy as np
import pytest
import torch

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import DataError
from fedtumor.core.losses import build_loss
from fedtumor.core.model import build_model, count_parameters
from fedtumor.core.regions import labels_to_regions
from fedtumor.core.training import VolumeCase, evaluate_cases, predict_labels, train_epochs
from fedtumor.run.checkpoint import load_checkpoint, save_checkpoint


@pytest.mark.parametrize("name", ["unet", "segresnet", "dynunet", "fets-resunet"])
def test_every_model_maps_four_modalities_to_three_regions(name):
    model = build_model(name, base_filters=4)
    with torch.no_grad():
        out = model(torch.zeros(1, 4, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32)


def test_fets_reference_size_and_instance_norm():
    model = build_model("fets-resunet", base_filters=32)
    assert 15e6 < count_parameters(model) < 25e6  # a 3D residual U-Net of FeTS's size
    norms = {type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__}
    assert norms == {"InstanceNorm3d"}


def test_unknown_model_and_loss_are_refused():
    with pytest.raises(ValueError, match="vnet"):
        build_model("vnet")
    with pytest.raises(ValueError, match="focal"):
        build_loss("focal")


def blob_batch(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright cube on noise; all three regions are the cube."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 4, size, size, size, generator=generator) * 0.1
    target = torch.zeros(1, 3, size, size, size)
    image[..., 4:10, 4:10, 4:10] += 2.0
    target[..., 4:10, 4:10, 4:10] = 1.0
    return image, target


@pytest.mark.parametrize("loss_name", ["dice", "dicece"])
def test_training_lowers_the_loss(loss_name):
    torch.manual_seed(0)
    model = build_model("unet", base_filters=4)
    batch = blob_batch()
    loss_fn = build_loss(loss_name)
    with torch.no_grad():
        before = loss_fn(model(batch[0]), batch[1]).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    stats = train_epochs(model, lambda: [batch] * 10, 6, optimizer, loss_fn, torch.device("cpu"))
    assert stats.num_patches == 60
    assert stats.loss < before * 0.95


class ThresholdNet(torch.nn.Module):
    """A known predictor: region logits are positive where the first three channels exceed 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * (x[:, :3] - 1.0)


def test_sliding_window_prediction_is_nested_and_scored():
    image, target = blob_batch(size=24)
    image[:, 0, 6:8, 6:8, 6:8] -= 5.0  # an ET hole inside TC: nesting must keep it TC (NCR)
    labels = predict_labels(ThresholdNet(), image[0], patch_size=16, device=torch.device("cpu"))
    assert labels.shape == (24, 24, 24)
    assert set(np.unique(labels).tolist()) == {0, 1, 4}
    assert (labels[6:8, 6:8, 6:8] == 1).all()
    regions = labels_to_regions(labels)
    assert (regions[0] <= regions[1]).all() and (regions[1] <= regions[2]).all()
    case = VolumeCase("cube", image[0], target[0].numpy().astype(bool), (1.0, 1.0, 1.0))
    means, per_subject, kept = evaluate_cases(
        ThresholdNet(), [case], 16, torch.device("cpu"), keep_prediction_of="cube"
    )
    assert means["dice_wt"] == 1.0 and means["dice_tc"] == 1.0 and means["hd95_wt"] == 0.0
    assert means["dice_et"] == pytest.approx(2 * 208 / (208 + 216))  # 6^3 cube minus the 2^3 hole
    assert per_subject["cube"] == means and np.array_equal(kept, labels)


def test_checkpoint_round_trip(tmp_path):
    config = RunConfig(model="unet", base_filters=4, patch_size=32, spacing_mm=2.0)
    model = build_model("unet", base_filters=4)
    save_checkpoint(tmp_path / "final_model.pt", model.state_dict(), config, server_round=3)
    loaded, meta = load_checkpoint(tmp_path)  # a run folder means its final model
    assert meta == {"model": "unet", "base_filters": 4, "patch_size": 32, "spacing_mm": 2.0, "round": 3}
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_bad_checkpoint_is_named(tmp_path):
    with pytest.raises(DataError, match="final_model.pt"):
        load_checkpoint(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt"):
        load_checkpoint(junk)
