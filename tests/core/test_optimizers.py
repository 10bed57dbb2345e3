"""The local optimiser: its run-config keys, refused in one line naming the key, and the one factory."""

import pytest
import torch

from fedtumor.core.config import RunConfig, read_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.core.optimizers import OptimizerSettings, build_optimizer
from fedtumor.core.training import train_site_round


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer='rmsprop'", "optimizer"),
        ("optimizer='sgd' momentum=1.0", "momentum"),
        ("optimizer='sgd' momentum=-0.1", "momentum"),
        ("momentum=0.9", "momentum"),  # Adam, the default, has no momentum key
        ("weight-decay=-1e-4", "weight-decay"),
        ("optimizer=1", "optimizer"),
        ("early-stopping-patience=-1", "early-stopping-patience"),
        ("early-stopping-patience=1.5", "early-stopping-patience"),
        ("early-stopping-min-delta=-0.1", "early-stopping-min-delta"),
        ("early-stopping-patience=2 server-eval=false fraction-evaluate=0.0", "early-stopping-patience"),
    ],
)
def test_a_bad_optimiser_or_early_stopping_value_is_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^run-config key '{key}'") as raised:
        read_run_config(override)
    assert "\n" not in str(raised.value)


def test_defaults_are_todays_fresh_adam_and_no_early_stopping():
    config = RunConfig()
    assert (config.optimizer, config.momentum, config.weight_decay) == ("adam", 0.0, 0.0)
    assert (config.early_stopping_patience, config.early_stopping_min_delta) == (0, 0.0)
    assert OptimizerSettings.from_config(config) == OptimizerSettings()


def test_the_factory_builds_what_the_keys_say():
    params = [torch.nn.Parameter(torch.zeros(3))]
    adam = build_optimizer("adam", params, lr=0.01, weight_decay=1e-4)
    assert type(adam) is torch.optim.Adam and adam.defaults["weight_decay"] == 1e-4
    config = read_run_config("optimizer='sgd' momentum=0.9 weight-decay=0.001")
    sgd = OptimizerSettings.from_config(config).build(params, lr=0.5)
    assert type(sgd) is torch.optim.SGD
    assert (sgd.defaults["lr"], sgd.defaults["momentum"], sgd.defaults["weight_decay"]) == (0.5, 0.9, 0.001)
    for bad in ({"name": "adamw"}, {"momentum": 1.0}, {"name": "adam", "momentum": 0.5}, {"weight_decay": -1.0}):
        with pytest.raises(ValueError):
            OptimizerSettings(**{"name": "sgd", **bad})
    with pytest.raises(ValueError, match="learning rate"):
        build_optimizer("sgd", params, lr=0.0)


def one_round(settings: OptimizerSettings | None, lr: float = 0.1) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, kernel_size=1)
    inputs, targets = torch.randn(2, 1, 2, 2, 2), torch.randn(2, 2, 2, 2, 2)
    batches = lambda: [(inputs[:1], targets[:1]), (inputs[1:], targets[1:])]  # noqa: E731
    loss = torch.nn.functional.mse_loss
    train_site_round(model, batches, 2, loss, torch.device("cpu"), learning_rate=lr, optimizer_settings=settings)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_a_site_round_uses_the_configured_optimiser_and_defaults_to_plain_adam():
    default = one_round(None)
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, kernel_size=1)
    inputs, targets = torch.randn(2, 1, 2, 2, 2), torch.randn(2, 2, 2, 2, 2)
    adam = torch.optim.Adam(model.parameters(), lr=0.1)  # what a site built before the optimizer key
    for _ in range(2):
        for i in (0, 1):
            adam.zero_grad()
            torch.nn.functional.mse_loss(model(inputs[i : i + 1]), targets[i : i + 1]).backward()
            adam.step()
    for name, value in model.state_dict().items():
        assert torch.equal(default[name], value), name
    sgd = one_round(OptimizerSettings("sgd", momentum=0.5))
    assert not all(torch.equal(sgd[name], default[name]) for name in default)
    assert all(torch.equal(one_round(OptimizerSettings())[name], default[name]) for name in default)
