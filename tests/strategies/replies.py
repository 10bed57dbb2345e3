"""Hand-made train replies and a tiny network, for checking strategies against hand-computed aggregates."""

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedtumor.federation.conformance import site_reply
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.wire import SITE_RECORD_KEY

NEW = {"fedbn", "scaffold", "fedcostwavg", "fedpidavg"}  # the built-ins checked by hand here
OPTIONS = StrategyOptions(min_available_nodes=1)  # each strategy built with them keeps its own ledger


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
