"""FedBN, SCAFFOLD, FedCostWAvg and FedPIDAvg against hand-computed aggregations and client hooks."""

import logging
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.cli import console as cli_console
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.core.model import build_model
from fedtumor.core.training import train_epochs
from fedtumor.federation.conformance import site_reply
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.registry import build_strategy, client_hooks_for, load_registry, parse_strategy_config
from fedtumor.federation.wire import SITE_RECORD_KEY
from strategies.fedbn import LOCAL_NORMS_KEY, FedBN, FedBNClientHooks, FedBNPlugin, norm_state_keys
from strategies.fedcostwavg import FedCostWAvg, FedCostWAvgPlugin
from strategies.fedpidavg import FedPIDAvg, FedPIDAvgPlugin
from strategies.scaffold import (
    CONTROL_KEY,
    DELTA_PREFIX,
    LOCAL_CONTROL_KEY,
    Scaffold,
    ScaffoldClientHooks,
    ScaffoldPlugin,
)

NEW = {"fedbn", "scaffold", "fedcostwavg", "fedpidavg"}  # the built-ins checked by hand here
OPTIONS = StrategyOptions(min_available_nodes=1)  # each strategy built with them keeps its own ledger


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """Flower's Message needs to know whose messages these are outside a ServerApp process."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


class Grid:
    """The part of Flower's Grid that configure_train uses."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return list(self.node_ids)


def record(arrays: dict) -> ArrayRecord:
    return ArrayRecord({key: Array(np.asarray(value, dtype=np.float32)) for key, value in arrays.items()})


def reply(node_id: int, arrays: dict, site: str | None = None, **metrics) -> Message:
    """A train reply as a site's ClientApp sends it (metric keys in kebab-case: loss_before -> loss-before)."""
    content = RecordDict(
        {
            "arrays": ArrayRecord(
                {k: v if isinstance(v, Array) else Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}
            ),
            "metrics": MetricRecord({key.replace("_", "-"): value for key, value in metrics.items()}),
        }
    )
    if site is not None:
        content[SITE_RECORD_KEY] = ConfigRecord({"site-id": site})
    return site_reply(node_id, content)


def values(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in arrays.items()}


class TinyNet(torch.nn.Module):
    """A Conv3d and an affine InstanceNorm3d: the layer types of fedtumor's U-Nets."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, kernel_size=1)
        self.norm = torch.nn.InstanceNorm3d(2, affine=True)

    def forward(self, x):
        return self.norm(self.conv(x))


def filled(model: torch.nn.Module, **by_key: float) -> dict[str, torch.Tensor]:
    """The model's state dict with every entry of ``key`` (dots as underscores) set to a constant."""
    return {k: torch.full_like(v, by_key[k.replace(".", "_")]) for k, v in model.state_dict().items()}


def set_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    model.load_state_dict(state)


# ---------------------------------------------------------------------- registry
def test_built_in_strategies_are_registered_and_listed(monkeypatch):
    built_ins = {ep.name for ep in entry_points(group="fedtumor.strategies") if ep.value.startswith("strategies.")}
    registry = load_registry()
    assert NEW <= built_ins <= set(registry.plugins) and not registry.broken
    # The CLI's console reads COLUMNS when imported (80 under pytest-xdist): make the table wide enough.
    monkeypatch.setattr(cli_console, "_width", 200)
    result = CliRunner().invoke(app, ["strategies", "list"])
    assert result.exit_code == 0, result.output
    for name in built_ins:
        assert name in result.output
    assert "alpha=0.45 beta=0.45 gamma=0.1 window=5" in result.output


def test_parameters_are_checked_when_the_strategy_is_built():
    with pytest.raises(ConfigError, match="'alpha' must lie in"):
        FedCostWAvgPlugin().build(parse_strategy_config(FedCostWAvgPlugin, "alpha=1.5"), OPTIONS)
    with pytest.raises(ConfigError, match="'window' must be >= 1"):
        FedPIDAvgPlugin().build(parse_strategy_config(FedPIDAvgPlugin, "window=0"), OPTIONS)
    with pytest.raises(ConfigError, match="must be >= 0"):
        FedPIDAvgPlugin().build(parse_strategy_config(FedPIDAvgPlugin, "beta=-0.1"), OPTIONS)
    with pytest.raises(ConfigError, match="'server-learning-rate' must be > 0"):
        ScaffoldPlugin().build(parse_strategy_config(ScaffoldPlugin, "server-learning-rate=0"), OPTIONS)


# ---------------------------------------------------------------------- FedBN
def test_norm_entries_are_found_by_module_type_not_by_name():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.Conv3d(1, 2, 1)  # named "norm", but a convolution
            self.x = torch.nn.InstanceNorm3d(2, affine=True)
            self.y = torch.nn.BatchNorm3d(2)
            self.z = torch.nn.GroupNorm(1, 2)
            self.plain = torch.nn.InstanceNorm3d(2)  # no parameters, no buffers

    assert norm_state_keys(Net()) == [
        "x.weight",
        "x.bias",
        "y.weight",
        "y.bias",
        "y.running_mean",
        "y.running_var",
        "y.num_batches_tracked",
        "z.weight",
        "z.bias",
    ]
    unet = build_model("unet", 2)  # MONAI names its norms ...adn.N
    assert norm_state_keys(unet) == [k for k in unet.state_dict() if ".adn.N." in k] != []


def test_fedbn_averages_what_sites_send_and_keeps_the_global_norms():
    strategy = FedBNPlugin().build({}, OPTIONS)
    assert isinstance(strategy, FedBN)
    global_arrays = record({"conv.weight": [1.0, 1.0], "norm.weight": [5.0, 5.0], "head.bias": [9.0]})
    list(strategy.configure_train(1, global_arrays, ConfigRecord(), Grid([1, 2])))
    replies = [
        reply(1, {"conv.weight": [2.0, 4.0], "head.bias": [1.0]}, num_examples=1),
        reply(2, {"conv.weight": [6.0, 8.0], "head.bias": [5.0]}, num_examples=3),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    out = values(arrays)
    assert list(out) == ["conv.weight", "norm.weight", "head.bias"]  # the global model's keys, in order
    np.testing.assert_allclose(out["conv.weight"], [(2 * 1 + 6 * 3) / 4, (4 * 1 + 8 * 3) / 4])  # [5, 7]
    np.testing.assert_allclose(out["head.bias"], [(1 * 1 + 5 * 3) / 4])  # [4]
    np.testing.assert_array_equal(out["norm.weight"], [5.0, 5.0])  # never sent: untouched


def test_fedbn_sites_keep_their_norms_across_rounds_and_for_evaluation():
    config = {"client-hook": "fedbn"}
    state = RecordDict()  # the node's context.state, kept across rounds
    model = TinyNet()
    global_1 = filled(model, conv_weight=0.5, conv_bias=0.0, norm_weight=1.0, norm_bias=0.0)

    hooks = client_hooks_for(config, state)  # round 1, found through the registry
    assert type(hooks) is FedBNClientHooks
    hooks.load_global(model, RecordDict({"arrays": ArrayRecord(global_1)}))
    assert model.norm.weight.tolist() == [1.0, 1.0]  # first round: the global model's norms
    set_state(model, filled(model, conv_weight=2.0, conv_bias=0.1, norm_weight=3.0, norm_bias=-1.0))  # "training"
    sent = hooks.reply_arrays(model, num_steps=4, learning_rate=0.1)
    assert set(sent) == {"conv.weight", "conv.bias"}
    kept = state[LOCAL_NORMS_KEY].to_torch_state_dict()
    assert {k: v.tolist() for k, v in kept.items()} == {"norm.weight": [3.0, 3.0], "norm.bias": [-1.0, -1.0]}

    # Round 2 (and evaluation, which calls the same load_global): global non-norm arrays, local norms.
    global_2 = filled(model, conv_weight=7.0, conv_bias=0.2, norm_weight=1.0, norm_bias=0.0)
    for _ in ("train", "evaluate"):
        fresh = TinyNet()
        client_hooks_for(config, state).load_global(fresh, RecordDict({"arrays": ArrayRecord(global_2)}))
        assert fresh.conv.weight.flatten().tolist() == [7.0, 7.0]
        assert fresh.conv.bias.tolist() == pytest.approx([0.2, 0.2])
        assert fresh.norm.weight.tolist() == [3.0, 3.0] and fresh.norm.bias.tolist() == [-1.0, -1.0]


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
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
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


# ---------------------------------------------------------------------- FedCostWAvg
def test_fedcostwavg_weights_data_share_and_cost_decrease_ratio():
    strategy = FedCostWAvgPlugin().build({"alpha": 0.5}, OPTIONS)
    assert isinstance(strategy, FedCostWAvg)
    messages = list(strategy.configure_train(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    assert all(m.content["config"]["report-loss-before"] is True for m in messages)
    assert all("client-hook" not in m.content["config"] for m in messages)  # no client hooks needed
    evaluate = list(strategy.configure_evaluate(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    assert all(m.content["config"]["report-loss-before"] is True for m in evaluate)
    replies = [
        reply(1, {"w": [0.0, 24.0]}, site="a", num_examples=1, loss_before=0.8, loss=0.4),  # k = 2
        reply(2, {"w": [24.0, 0.0]}, site="b", num_examples=3, loss_before=0.6, loss=0.6),  # k = 1
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    # w_a = 0.5 * 1/4 + 0.5 * 2/3 = 11/24, w_b = 0.5 * 3/4 + 0.5 * 1/3 = 13/24
    assert strategy.last_weights == {"a": pytest.approx(11 / 24), "b": pytest.approx(13 / 24)}
    np.testing.assert_allclose(arrays["w"].numpy(), [13.0, 11.0], rtol=1e-6)
    assert metrics["loss"] == pytest.approx(0.4 * 0.25 + 0.6 * 0.75)


def test_fedcostwavg_prefers_loss_after_on_the_same_patches():
    strategy = FedCostWAvgPlugin().build({"alpha": 0.0}, OPTIONS)
    replies = [
        # The running training loss says site a got worse; the same-patch loss says it halved.
        reply(1, {"w": [0.0, 3.0]}, site="a", num_examples=1, loss_before=0.8, loss=0.9, loss_after=0.4),  # k = 2
        reply(2, {"w": [3.0, 0.0]}, site="b", num_examples=1, loss_before=0.6, loss=0.5, loss_after=0.6),  # k = 1
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert strategy.last_weights == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    np.testing.assert_allclose(arrays["w"].numpy(), [1.0, 2.0], rtol=1e-6)


def test_fedcostwavg_with_alpha_one_is_fedavg():
    strategy = FedCostWAvgPlugin().build({"alpha": 1.0}, OPTIONS)
    replies = [
        reply(1, {"w": [0.0, 24.0]}, num_examples=1, loss_before=0.8, loss=0.4),
        reply(2, {"w": [24.0, 0.0]}, num_examples=3, loss_before=0.6, loss=0.6),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [18.0, 6.0])


def test_fedcostwavg_without_loss_before_falls_back_to_data_shares(caplog):
    strategy = FedCostWAvgPlugin().build({"alpha": 0.5}, OPTIONS)
    replies = [
        reply(1, {"w": [0.0, 24.0]}, num_examples=1, loss=0.4),
        reply(2, {"w": [24.0, 0.0]}, num_examples=3, loss=0.6),
    ]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [18.0, 6.0])
    assert "using data-share weights" in caplog.text


# ---------------------------------------------------------------------- FedPIDAvg
def test_fedpidavg_weights_over_three_rounds_keyed_by_site():
    strategy = FedPIDAvgPlugin().build(parse_strategy_config(FedPIDAvgPlugin, "window=2"), OPTIONS)
    assert isinstance(strategy, FedPIDAvg)
    messages = list(strategy.configure_train(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    assert all(m.content["config"]["report-loss-before"] is True for m in messages)

    def aggregate(server_round, a, b, a_node=1, b_node=2):
        replies = [
            reply(a_node, {"w": [1.0, 0.0]}, site="a", num_examples=1, loss_before=a[0], loss=a[1]),
            reply(b_node, {"w": [0.0, 1.0]}, site="b", num_examples=3, loss_before=b[0], loss=b[1]),
        ]
        arrays, _ = strategy.aggregate_train(server_round, replies)
        return arrays["w"].numpy()

    # Round 1: P = (1/4, 3/4); drops 0.5, 0.1 -> D = (5/6, 1/6); losses 0.5, 0.7 -> I = (5/12, 7/12)
    w = aggregate(1, a=(1.0, 0.5), b=(0.8, 0.7))
    np.testing.assert_allclose(w, [0.45 / 4 + 0.45 * 5 / 6 + 0.1 * 5 / 12, 0.45 * 3 / 4 + 0.45 / 6 + 0.1 * 7 / 12])
    np.testing.assert_allclose(w, [0.5291667, 0.4708333], rtol=1e-6)

    # Round 2, nodes swapped (history follows the site id): b's loss rose -> D = (1, 0);
    # sums over the window: a 0.5 + 0.3 = 0.8, b 0.7 + 0.8 = 1.5 -> I = (0.8/2.3, 1.5/2.3)
    w = aggregate(2, a=(0.6, 0.3), b=(0.7, 0.8), a_node=2, b_node=1)
    np.testing.assert_allclose(w, [0.45 / 4 + 0.45 + 0.1 * 0.8 / 2.3, 0.45 * 3 / 4 + 0.1 * 1.5 / 2.3], rtol=1e-6)

    # Round 3: window 2 drops round 1; drops 0.2, 0.4 -> D = (1/3, 2/3);
    # sums: a 0.3 + 0.2 = 0.5, b 0.8 + 0.5 = 1.3 -> I = (0.5/1.8, 1.3/1.8)
    w = aggregate(3, a=(0.4, 0.2), b=(0.9, 0.5))
    np.testing.assert_allclose(w, [0.45 / 4 + 0.15 + 0.1 * 0.5 / 1.8, 0.45 * 3 / 4 + 0.3 + 0.1 * 1.3 / 1.8], rtol=1e-6)
    assert list(strategy.loss_history["a"]) == [0.3, 0.2] and list(strategy.loss_history["b"]) == [0.8, 0.5]


def test_fedpidavg_without_any_decrease_uses_data_shares_for_the_derivative(caplog):
    strategy = FedPIDAvgPlugin().build(parse_strategy_config(FedPIDAvgPlugin, ""), OPTIONS)
    replies = [
        reply(1, {"w": [1.0, 0.0]}, site="a", num_examples=1, loss_before=0.5, loss=0.5),
        reply(2, {"w": [0.0, 1.0]}, site="b", num_examples=3, loss_before=0.5, loss=0.5),
    ]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = strategy.aggregate_train(1, replies)
    # P = D = (1/4, 3/4), I = (1/2, 1/2): w_a = 0.9/4 + 0.05
    np.testing.assert_allclose(arrays["w"].numpy(), [0.9 / 4 + 0.05, 0.9 * 3 / 4 + 0.05], rtol=1e-6)
    assert "no cost decrease" in caplog.text


@pytest.mark.parametrize("name", sorted(NEW))
def test_identical_updates_aggregate_to_that_update(name):
    plugin = load_registry().plugins[name]
    strategy = plugin().build(parse_strategy_config(plugin, ""), OPTIONS)
    list(strategy.configure_train(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    update = {"w": [2.0, -3.0]}
    replies = [
        reply(node, update, site=f"s{node}", num_examples=node, loss_before=0.9, loss=0.3 * node) for node in (1, 2)
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0, -3.0], rtol=1e-6)
