"""A site's personalised scoring: global and personal model side by side, a hand-checkable FedBN case."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from client_app.personal import heldout_asked, site_heldout_cases, site_scores
from fedtumor.core.config import RunConfig
from fedtumor.core.training import VolumeCase
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CONFIG_KEY,
    MAY_BE_LAST_ROUND_KEY,
    NUM_HELDOUT_KEY,
    PERSONAL_HELDOUT_PREFIX,
    PERSONAL_PREFIX,
    SERVER_ROUND_KEY,
)
from strategies.fedbn import LOCAL_NORMS_KEY, FedBNClientHooks

SIZE = 16  # one sliding window covers the volume: no padding changes the norm's statistics


class OneNormNet(torch.nn.Module):
    """1x1x1 convolution summing the 4 channels into 3, then one affine instance norm: the logits."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(4, 3, 1)
        self.norm = torch.nn.InstanceNorm3d(3, affine=True)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()

    def forward(self, x):
        return self.norm(self.conv(x))


def tumour_case() -> VolumeCase:
    """A bright cube (label 4: ET = TC = WT) in a dark volume; 1 mm voxels."""
    tumour = np.zeros((SIZE,) * 3, bool)
    tumour[4:10, 5:11, 3:9] = True
    image = torch.from_numpy(np.repeat(tumour[None].astype(np.float32), 4, axis=0))
    return VolumeCase("case-1", image, np.repeat(tumour[None], 3, axis=0), (1.0, 1.0, 1.0))


def norm_state(scale: float) -> dict[str, torch.Tensor]:
    return {"norm.weight": torch.full((3,), scale), "norm.bias": torch.zeros(3)}


def global_content(model: torch.nn.Module) -> RecordDict:
    """The server's model: norm scale -1 makes the normalised cube negative, the rest positive: all but the cube."""
    state = {**model.state_dict(), **norm_state(-1.0)}
    return RecordDict({ARRAYS_KEY: ArrayRecord(state), CONFIG_KEY: ConfigRecord({SERVER_ROUND_KEY: 2})})


def test_fedbn_local_norm_scores_one_where_the_global_model_scores_zero():
    state = RecordDict({LOCAL_NORMS_KEY: ArrayRecord(norm_state(+1.0))})  # the site's own norm: scale +1
    hooks = FedBNClientHooks({"client-hook": "fedbn"}, state)
    model = OneNormNet()
    content = global_content(model)
    hooks.load_global(model, content)  # as the evaluate handler's _prepare does
    scores = site_scores(model, hooks, content, [tumour_case()], SIZE, torch.device("cpu"))
    for region in ("et", "tc", "wt"):
        assert scores[f"dice_{region}"] == 0.0  # the server's model: empty prediction
        assert scores[f"{PERSONAL_PREFIX}dice_{region}"] == 1.0  # the site's norm: exactly the cube
    assert not any(key.startswith(PERSONAL_HELDOUT_PREFIX) for key in scores)  # not asked


def test_personal_heldout_scores_come_with_their_count_when_asked():
    hooks = FedBNClientHooks({}, RecordDict({LOCAL_NORMS_KEY: ArrayRecord(norm_state(+1.0))}))
    model = OneNormNet()
    content = global_content(model)
    cases = [tumour_case()]
    scores = site_scores(model, hooks, content, cases, SIZE, torch.device("cpu"), heldout=lambda: cases * 2)
    assert scores[f"{PERSONAL_HELDOUT_PREFIX}dice_wt"] == 1.0 and scores[NUM_HELDOUT_KEY] == 2


def test_without_a_personal_model_the_model_is_scored_as_loaded_and_nothing_else():
    model = OneNormNet()
    content = global_content(model)
    hooks = ClientHooks({}, RecordDict())
    hooks.load_global(model, content)
    calls = []
    scores = site_scores(model, hooks, content, [tumour_case()], SIZE, torch.device("cpu"), lambda: calls.append(1))
    assert scores["dice_wt"] == 0.0 and not calls
    assert not any(key.startswith(PERSONAL_PREFIX) for key in scores)


def test_fedbn_personal_arrays_need_the_global_model():
    hooks = FedBNClientHooks({}, RecordDict({LOCAL_NORMS_KEY: ArrayRecord(norm_state(+1.0))}))
    content = global_content(OneNormNet())
    assert hooks.personal_arrays() is None
    personal = hooks.personal_arrays(content).to_torch_state_dict()
    assert list(personal) == list(content[ARRAYS_KEY].keys())
    assert personal["norm.weight"].tolist() == [1.0] * 3  # the site's, not the server's -1
    assert np.array_equal(personal["conv.weight"].numpy(), content[ARRAYS_KEY]["conv.weight"].numpy())


@pytest.mark.parametrize(
    ("mode", "server_round", "asked"),
    [("final", 3, True), ("final", 2, False), ("every-round", 1, True), ("never", 3, False)],
)
def test_heldout_is_asked_by_personal_heldout(mode, server_round, asked):
    config = RunConfig(num_server_rounds=3, personal_heldout=mode)
    assert heldout_asked(config, {SERVER_ROUND_KEY: server_round}) is asked


@pytest.mark.parametrize(("mode", "asked"), [("final", True), ("never", False)])
def test_a_round_early_stopping_may_end_the_run_after_counts_as_final(mode, asked):
    config = RunConfig(num_server_rounds=30, personal_heldout=mode)
    assert heldout_asked(config, {SERVER_ROUND_KEY: 7, MAY_BE_LAST_ROUND_KEY: True}) is asked
    assert heldout_asked(config, {SERVER_ROUND_KEY: 7, MAY_BE_LAST_ROUND_KEY: False}) is False


def test_a_deployed_site_has_no_heldout_set():
    config = RunConfig(num_server_rounds=1, personal_heldout="every-round")
    assert site_heldout_cases(config, {"data-dir": "/data/site-a"}, {SERVER_ROUND_KEY: 1}) == []
