"""SCAFFOLD against hand-computed aggregations and its client hooks."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedtumor.core.config import RunConfig, read_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.core.optimizers import OptimizerSettings
from fedtumor.core.training import train_epochs
from fedtumor.federation.registry import build_strategy, client_hooks_for
from fedtumor.federation.settings import check_federation_keys, required_overrides
from strategies.scaffold import (
    CONTROL_KEY,
    DELTA_PREFIX,
    LOCAL_CONTROL_KEY,
    Scaffold,
    ScaffoldClientHooks,
    ScaffoldPlugin,
)
from tests.strategies.replies import OPTIONS, Grid, TinyNet, filled, record, reply, set_state, values


# ---------------------------------------------------------------------- SCAFFOLD
def test_scaffold_server_updates_model_and_control_variate():
    strategy = build_strategy(RunConfig(strategy="scaffold", strategy_config="server-learning-rate=0.5"))
    assert isinstance(strategy, Scaffold) and strategy.server_learning_rate == 0.5
    global_arrays = ArrayRecord({"w": Array(np.array([1.0, 2.0], np.float32)), "steps": Array(np.array([10]))})
    messages = list(strategy.configure_train(1, global_arrays, ConfigRecord(), Grid([1, 2, 3])))  # N = 3
    assert len(messages) == 3
    for message in messages:  # c starts at zero, float keys only
        assert values(message.content[CONTROL_KEY]) == {"w": pytest.approx([0.0, 0.0])}
    replies = [
        reply(1, {"w": [3.0, 2.0], "steps": Array(np.array([12])), DELTA_PREFIX + "w": [0.3, -0.6]}, num_examples=1),
        reply(2, {"w": [1.0, 6.0], "steps": Array(np.array([13])), DELTA_PREFIX + "w": [0.9, 0.0]}, num_examples=3),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    out = values(arrays)
    assert list(out) == ["w", "steps"]  # model keys only: no control-variate deltas
    # weighted mean of w: [(3 + 3) / 4, (2 + 18) / 4] = [1.5, 5]; x + 0.5 (mean - x) = [1.25, 3.5]
    np.testing.assert_allclose(out["w"], [1.25, 3.5])
    assert out["w"].dtype == np.float32
    # integer arrays: FedAvg (12 + 39) / 4 = 12.75, rounded, dtype kept
    assert out["steps"].tolist() == [13] and out["steps"].dtype == np.int64
    # c <- 0 + (|S| / N) mean(delta) = 2/3 * [0.6, -0.3]
    np.testing.assert_allclose(strategy.control["w"], [0.4, -0.2], rtol=1e-6)

    messages = list(strategy.configure_train(2, arrays, ConfigRecord(), Grid([1, 2, 3])))
    for message in messages:
        np.testing.assert_allclose(message.content[CONTROL_KEY]["w"].numpy(), [0.4, -0.2], rtol=1e-6)
        assert message.content["config"]["client-hook"] == "scaffold"


def test_scaffold_with_unit_server_rate_is_fedavg_of_the_models():
    strategy = ScaffoldPlugin().build({"server-learning-rate": 1.0}, OPTIONS)
    list(strategy.configure_train(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    replies = [reply(1, {"w": [4.0, 0.0]}, num_examples=1), reply(2, {"w": [0.0, 4.0]}, num_examples=3)]
    arrays, _ = strategy.aggregate_train(1, replies)  # no deltas sent: c stays zero
    np.testing.assert_allclose(arrays["w"].numpy(), [1.0, 3.0])
    np.testing.assert_array_equal(strategy.control["w"], [0.0, 0.0])


def test_scaffold_client_corrects_gradients_and_keeps_its_control_variate():
    state = RecordDict()
    model = TinyNet()
    names = [name for name, _ in model.named_parameters()]

    def round_trip(x: float, c: float, y: float, num_steps: int, lr: float) -> tuple[list[float], ArrayRecord]:
        hooks = client_hooks_for({"client-hook": "scaffold"}, state)
        assert type(hooks) is ScaffoldClientHooks
        control = ArrayRecord({k: torch.full_like(v, c) for k, v in model.state_dict().items()})
        global_x = filled(model, conv_weight=x, conv_bias=x, norm_weight=x, norm_bias=x)
        hooks.load_global(model, RecordDict({"arrays": ArrayRecord(global_x), CONTROL_KEY: control}))
        for param in model.parameters():
            param.grad = torch.ones_like(param)
        hooks.before_optimizer_step(model)
        grads = sorted({g for p in model.parameters() for g in p.grad.flatten().tolist()})
        set_state(model, filled(model, conv_weight=y, conv_bias=y, norm_weight=y, norm_bias=y))  # "training"
        return grads, hooks.reply_arrays(model, num_steps=num_steps, learning_rate=lr)

    # Round 1: c = 0.5, c_i = 0 (first time): gradient 1 + (0.5 - 0) = 1.5.
    # c_i+ = 0 - 0.5 + (1 - (-1)) / (4 * 0.5) = 0.5; delta = 0.5.
    grads, sent = round_trip(x=1.0, c=0.5, y=-1.0, num_steps=4, lr=0.5)
    assert grads == [1.5]
    assert set(sent) == set(model.state_dict()) | {DELTA_PREFIX + name for name in names}
    assert {k: set(v.numpy().flatten().tolist()) for k, v in sent.items() if k.startswith(DELTA_PREFIX)} == {
        DELTA_PREFIX + name: {0.5} for name in names
    }
    assert {float(v.unique()) for v in state[LOCAL_CONTROL_KEY].to_torch_state_dict().values()} == {0.5}

    # Round 2: c = 0.25, c_i = 0.5 from state: gradient 1 + (0.25 - 0.5) = 0.75.
    # c_i+ = 0.5 - 0.25 + (2 - 1) / (2 * 0.25) = 2.25; delta = 1.75.
    grads, sent = round_trip(x=2.0, c=0.25, y=1.0, num_steps=2, lr=0.25)
    assert grads == [0.75]
    assert {float(np.unique(sent[DELTA_PREFIX + name].numpy())[0]) for name in names} == {1.75}
    assert {float(v.unique()) for v in state[LOCAL_CONTROL_KEY].to_torch_state_dict().values()} == {2.25}

    # Evaluation carries no control variate and leaves the site's c_i alone.
    hooks = ScaffoldClientHooks({"client-hook": "scaffold"}, state)
    hooks.load_global(TinyNet(), RecordDict({"arrays": ArrayRecord(model.state_dict())}))
    assert {float(v.unique()) for v in state[LOCAL_CONTROL_KEY].to_torch_state_dict().values()} == {2.25}


def test_scaffold_hooks_in_the_training_loop_recover_the_gradient_after_one_sgd_step():
    # One SGD step from x: y = x - lr (g + c - c_i), so option II gives c_i+ = c_i - c + (x - y) / lr = g.
    torch.manual_seed(0)
    model = TinyNet()
    inputs, targets = torch.randn(1, 1, 2, 2, 2), torch.randn(1, 2, 2, 2, 2)
    loss_fn = torch.nn.functional.mse_loss
    loss_fn(model(inputs), targets).backward()
    gradient = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    state = RecordDict({LOCAL_CONTROL_KEY: ArrayRecord({k: torch.full_like(v, 0.1) for k, v in gradient.items()})})
    hooks = ScaffoldClientHooks({"client-hook": "scaffold"}, state)
    control = ArrayRecord({k: torch.full_like(v, 0.3) for k, v in gradient.items()})
    hooks.load_global(model, RecordDict({"arrays": ArrayRecord(model.state_dict()), CONTROL_KEY: control}))
    x = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = OptimizerSettings.from_config(read_run_config("strategy='scaffold' optimizer='sgd'")).build(
        model.parameters(), lr=0.1
    )  # what a SCAFFOLD site builds each round
    stats = train_epochs(
        model,
        lambda: [(inputs, targets)],
        1,
        optimizer,
        loss_fn,
        torch.device("cpu"),
        before_step=hooks.before_optimizer_step,
    )
    assert stats.num_steps == 1
    for name, p in model.named_parameters():  # the step used g + (c - c_i) = g + 0.2
        torch.testing.assert_close(p.detach(), x[name] - 0.1 * (gradient[name] + 0.2))
    sent = hooks.reply_arrays(model, stats.num_steps, 0.1)
    local = state[LOCAL_CONTROL_KEY].to_torch_state_dict()
    for name in gradient:
        torch.testing.assert_close(local[name], gradient[name], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            sent[DELTA_PREFIX + name].numpy(), gradient[name].numpy() - 0.1, rtol=1e-4, atol=1e-5
        )


# ---------------------------------------------------------------------- SCAFFOLD needs SGD
def test_scaffold_refuses_adam_before_the_run_in_one_line_naming_the_key():
    config = read_run_config("strategy='scaffold' optimizer='adam'")
    with pytest.raises(ConfigError, match="^run-config key 'optimizer': .*'scaffold'.*set optimizer='sgd'") as raised:
        check_federation_keys(config)
    assert "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match="^run-config key 'optimizer'"):
        check_federation_keys(RunConfig(strategy="scaffold"))  # the default optimiser is Adam


def test_scaffold_accepts_sgd_and_other_strategies_keep_adam():
    config = read_run_config("strategy='scaffold' optimizer='sgd' momentum=0.5")
    assert check_federation_keys(config) is config
    assert check_federation_keys(RunConfig(strategy="fedavg", optimizer="adam")).optimizer == "adam"
    assert isinstance(build_strategy(config), Scaffold)


def test_scaffold_requirements_as_run_config_text_make_the_config_pass():
    overrides = required_overrides("scaffold")
    assert overrides == "optimizer='sgd'" and required_overrides("fedavg") == ""
    config = read_run_config(f"strategy='scaffold' {overrides}")
    assert check_federation_keys(config).optimizer == "sgd"
