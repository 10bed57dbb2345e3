"""FedBN against hand-computed aggregations and its client hooks."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedtumor.core.model import build_model
from fedtumor.federation.registry import client_hooks_for
from strategies.fedbn import LOCAL_NORMS_KEY, FedBN, FedBNClientHooks, FedBNPlugin, norm_state_keys
from tests.strategies.replies import OPTIONS, Grid, TinyNet, filled, record, reply, set_state, values


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
