"""Network factory, losses, the training loop and sliding-window inference on tiny inputs."""

import numpy as np
import pytest
import torch

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import DataError
from fedtumor.core.losses import build_loss
from fedtumor.core.model import build_model, count_parameters
from fedtumor.core.regions import labels_to_regions
from fedtumor.core.training import VolumeCase, evaluate_cases, predict_labels, train_epochs, train_site_round
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


def noisy_batches(seed: int, count: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Blob batches with seeded noise, so two seeds give two different sets of patches."""
    generator = torch.Generator().manual_seed(seed)
    image, target = blob_batch()
    return [(image + 0.3 * torch.randn(image.shape, generator=generator), target) for _ in range(count)]


def site_round_weights(batches, **options) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("unet", base_filters=4)
    train_site_round(model, lambda: batches, 2, build_loss("dice"), torch.device("cpu"), **options)
    return model.state_dict()


def test_a_site_round_is_a_fresh_adam_over_train_epochs_and_repeats_exactly():
    batches = noisy_batches(seed=1)
    weights = site_round_weights(batches, learning_rate=1e-2)
    assert all(torch.equal(weights[k], v) for k, v in site_round_weights(batches, learning_rate=1e-2).items())
    other = site_round_weights(noisy_batches(seed=2), learning_rate=1e-2)
    assert not all(torch.equal(weights[k], v) for k, v in other.items())
    # Exactly the loop a caller would write by hand: Adam at the learning rate, then train_epochs.
    torch.manual_seed(0)
    model = build_model("unet", base_filters=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_epochs(model, lambda: batches, 2, optimizer, build_loss("dice"), torch.device("cpu"))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_a_site_round_can_keep_an_optimiser_across_rounds():
    torch.manual_seed(0)
    model = build_model("unet", base_filters=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = noisy_batches(seed=1)
    for _ in range(2):
        train_site_round(model, lambda: batches, 1, build_loss("dice"), torch.device("cpu"), optimizer=optimizer)
    assert optimizer.state_dict()["state"][0]["step"].item() == 2 * len(batches)  # one Adam over both rounds
    with pytest.raises(ValueError, match="exactly one of learning_rate"):
        train_site_round(model, lambda: batches, 1, build_loss("dice"), torch.device("cpu"))
    with pytest.raises(ValueError, match="exactly one of learning_rate"):
        train_site_round(
            model, lambda: batches, 1, build_loss("dice"), torch.device("cpu"), learning_rate=0.1, optimizer=optimizer
        )


def test_the_loss_change_probe_draws_one_pass_before_training_and_scores_it_before_and_after():
    torch.manual_seed(0)
    model = build_model("unet", base_filters=4)
    passes = []

    def epoch_batches():
        passes.append(len(passes))
        return noisy_batches(seed=len(passes))

    loss_fn = build_loss("dice")
    probe = noisy_batches(seed=1)
    with torch.no_grad():
        expected_before = float(np.mean([loss_fn(model(x), y).item() for x, y in probe]))
    result = train_site_round(
        model, epoch_batches, 3, loss_fn, torch.device("cpu"), learning_rate=1e-2, probe_loss_change=True
    )
    assert passes == [0, 1, 2, 3]  # the probe pass, then three epochs
    assert result.stats.num_patches == 9
    assert result.loss_before == pytest.approx(expected_before)
    with torch.no_grad():
        model.eval()
        expected_after = float(np.mean([loss_fn(model(x), y).item() for x, y in probe]))
    assert result.loss_after == pytest.approx(expected_after) and result.loss_after < result.loss_before
    unprobed = train_site_round(model, lambda: probe, 1, loss_fn, torch.device("cpu"), learning_rate=1e-2)
    assert unprobed.loss_before is None and unprobed.loss_after is None


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
    # The BraTS 2023+ scores follow the legacy ones; the ET prediction is one lesion (the
    # cube with a hole), so its lesion-wise Dice is its Dice.
    regions = ("et", "tc", "wt")
    legacy = [f"{m}_{r}" for r in regions for m in ("dice", "hd95", "sensitivity", "specificity")]
    added = [f"{m}_{r}" for r in regions for m in ("nsd", "lesion_dice", "lesion_hd95")]
    assert list(means) == legacy + added
    assert (means["lesion_dice_wt"], means["lesion_hd95_wt"], means["nsd_wt"]) == (1.0, 0.0, 1.0)
    assert means["lesion_dice_et"] == means["dice_et"] and means["lesion_hd95_et"] == means["hd95_et"]


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
