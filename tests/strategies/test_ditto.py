"""Ditto: FedAvg on the server, a personal model per site kept in context.state and pulled towards the global."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from client_app.personal import personal_trainer
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation.registry import client_hooks_for, load_registry, parse_strategy_config
from fedtumor.federation.wire import ARRAYS_KEY, PERSONAL_LOSS_KEY
from strategies.ditto import LAMBDA_KEY, PERSONAL_MODEL_KEY, Ditto, DittoClientHooks, DittoPlugin
from tests.strategies.replies import OPTIONS, Grid, record, reply, values

CONFIG = RunConfig(loss="dice", learning_rate=0.05)
EPOCHS = 3
PULL_EPOCHS = 40  # Adam moves each weight at most ~lr a step: enough steps to get back to the global model


class Segmenter(torch.nn.Module):
    """4 input channels to 3 region logits, with an affine norm: the layer types of fedtumor's U-Nets."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(4, 3, 1)
        self.norm = torch.nn.InstanceNorm3d(3, affine=True)

    def forward(self, x):
        return self.norm(self.conv(x))


def site_batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(2, 4, 8, 8, 8, generator=generator)
    return [(inputs, (inputs[:, :3] > 0.5).float())]  # a learnable target: bright voxels per channel


def trainer(epochs: int = EPOCHS):
    batches = site_batches(1)
    return personal_trainer(CONFIG, lambda: iter(batches), epochs, torch.device("cpu"), CONFIG.learning_rate)


def global_model(seed: int = 0) -> Segmenter:
    torch.manual_seed(seed)
    return Segmenter()


def content_of(model: torch.nn.Module) -> RecordDict:
    return RecordDict({ARRAYS_KEY: ArrayRecord(model.state_dict())})


def flat(state) -> torch.Tensor:
    return torch.cat([value.float().flatten() for value in state.values()])


def site_round(
    state: RecordDict, weight: float, sent: torch.nn.Module, epochs: int = EPOCHS
) -> tuple[DittoClientHooks, dict]:
    """One training round on a site: load the global model, (the global copy's training), the personal model's."""
    hooks = client_hooks_for({"client-hook": "ditto", LAMBDA_KEY: weight}, state)
    model = Segmenter()
    hooks.load_global(model, content_of(sent))
    return hooks, hooks.train_personal(model, trainer(epochs))


def personal_state(state: RecordDict) -> dict[str, torch.Tensor]:
    return state[PERSONAL_MODEL_KEY].to_torch_state_dict()


# ---------------------------------------------------------------------- the server
def test_ditto_averages_like_fedavg_and_sends_lambda_every_round():
    strategy = DittoPlugin().build({"lambda": 0.5}, OPTIONS)
    assert isinstance(strategy, Ditto)
    messages = list(strategy.configure_train(1, record({"w": [0.0, 0.0]}), ConfigRecord(), Grid([1, 2])))
    assert messages and all(m.content["config"][LAMBDA_KEY] == 0.5 for m in messages)
    replies = [reply(1, {"w": [2.0, 4.0]}, num_examples=1), reply(2, {"w": [6.0, 8.0]}, num_examples=3)]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(values(arrays)["w"], [(2 + 18) / 4, (4 + 24) / 4])
    evaluate = list(strategy.configure_evaluate(1, arrays, ConfigRecord(), Grid([1, 2])))
    assert evaluate and all(m.content["config"][LAMBDA_KEY] == 0.5 for m in evaluate)


def test_lambda_is_declared_and_must_not_be_negative():
    plugin = load_registry().get("ditto")
    assert parse_strategy_config(plugin, "")["lambda"] == 0.1
    with pytest.raises(ConfigError, match="ditto's 'lambda' must be >= 0"):
        plugin().build(parse_strategy_config(plugin, "lambda=-0.5"), OPTIONS)


# ---------------------------------------------------------------------- the site
def test_with_lambda_zero_the_personal_model_is_plain_local_training():
    sent = global_model()
    state = RecordDict()
    _, metrics = site_round(state, 0.0, sent)
    local = global_model()  # the same start, trained alone on the same patches
    stats = trainer()(local, None)
    for key, value in local.state_dict().items():
        torch.testing.assert_close(personal_state(state)[key], value)
    assert metrics == {PERSONAL_LOSS_KEY: stats.loss}


def test_the_personal_model_is_kept_across_rounds_and_pulled_towards_the_global_model():
    distances = {}
    for weight in (0.0, 1e4):
        state = RecordDict()
        site_round(state, 0.0, global_model(seed=0))  # round 1: a purely local personal model
        after_round_1 = flat(personal_state(state))
        sent = global_model(seed=1)  # round 2: another global model
        site_round(state, weight, sent, PULL_EPOCHS)
        personal = flat(personal_state(state))
        assert not torch.equal(personal, after_round_1)  # it continued from round 1's, and trained
        distances[weight] = torch.linalg.vector_norm(personal - flat(sent.state_dict())).item()
        hooks = client_hooks_for({"client-hook": "ditto"}, state)
        scored = Segmenter()
        assert hooks.load_personal(scored, content_of(sent))  # what evaluation scores: the kept model
        assert torch.equal(flat(scored.state_dict()), personal)
        assert torch.equal(flat(hooks.personal_arrays().to_torch_state_dict()), personal)
    start = torch.linalg.vector_norm(after_round_1 - flat(global_model(seed=1).state_dict())).item()
    assert distances[1e4] < 0.5 * start  # a large lambda pulls it to the global model
    assert distances[1e4] < 0.5 * distances[0.0]


def test_before_its_first_training_a_site_scores_the_global_model_as_its_personal_one():
    sent = global_model()
    hooks = client_hooks_for({"client-hook": "ditto"}, RecordDict())
    scored = Segmenter()
    assert hooks.load_personal(scored, content_of(sent)) and hooks.personal_arrays() is None
    assert torch.equal(flat(scored.state_dict()), flat(sent.state_dict()))
