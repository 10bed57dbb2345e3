"""FedBN (Li et al. 2021): normalisation layers never leave the site.

Li, Jiang, Zhang, Kamp, Dou. "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR 2021. Each site keeps the parameters *and* buffers of its normalisation
layers (scale, shift, running statistics); everything else is averaged as in FedAvg. A site's
scanner, protocol and intensity profile live in those layers, so FedBN suits non-IID features.

- Sites send only non-norm arrays and keep their norm arrays in ``context.state``
  (:data:`LOCAL_NORMS_KEY`); on every round, training or evaluation, they load the global
  non-norm arrays and their own norms (the global model's norms before their first update).
- The server averages the received keys weighted by ``num-examples``; keys no site sends
  (the norms) keep their previous global value, so the global model keeps its initial norms.
  The global model is therefore only meaningful with a site's norms: centralised evaluation of
  it uses those initial norms, per-site evaluation uses each site's own.

Personalised scoring: a site's personal model is the global non-norm arrays with its own norms
(:meth:`FedBNClientHooks.load_personal`, the global model's norms before the site first trains).
Each federated evaluation scores the global model (the server's, initial norms included) and
the personal one on the site's validation subjects (``dice_et`` and ``personal_dice_et``, ...).

Norm entries are found by module type (:func:`norm_state_keys`), never by name patterns.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.in_place_fedavg import InPlaceFedAvg
from fedtumor.federation.plugin import FlowerStrategyPlugin
from fedtumor.federation.strategy import FedTumorStrategy
from fedtumor.federation.wire import ARRAYS_KEY

LOCAL_NORMS_KEY = "fedbn-local-norms"  # ArrayRecord in the node's context.state
NORM_TYPES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
    torch.nn.RMSNorm,
)


def norm_state_keys(model: torch.nn.Module) -> list[str]:
    """State-dict keys (parameters and persistent buffers) of the model's normalisation layers."""
    keys: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            keys.extend(module.state_dict(prefix=f"{name}." if name else "").keys())
    return keys


class FedBN(FedTumorStrategy, InPlaceFedAvg):
    """FedAvg over the arrays sites send; the rest of the global model is carried over unchanged."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None and (previous := self.sent_arrays) is not None:
            arrays = ArrayRecord({key: arrays[key] if key in arrays else previous[key] for key in previous})
        return arrays, metrics


class FedBNClientHooks(ClientHooks):
    """Load the global model with this site's norms; send everything but the norms."""

    def load_global(self, model: torch.nn.Module, content: RecordDict) -> None:
        super().load_global(model, content)
        local = self.state.get(LOCAL_NORMS_KEY)
        if local is not None:  # absent until the site's first training round
            merged = model.state_dict()
            merged.update(local.to_torch_state_dict())
            model.load_state_dict(merged)

    def load_personal(self, model: torch.nn.Module, content: RecordDict) -> bool:
        """The site's personal model: the global non-norm arrays in ``content`` with this site's norms."""
        self.load_global(model, content)
        return True

    def personal_arrays(self, content: RecordDict | None = None) -> ArrayRecord | None:
        """Global non-norm arrays (from ``content``) plus the site's norms; None without ``content``.

        The site keeps only its norms, so the rest of its personal model is the global model it is sent.
        """
        if content is None:
            return None
        arrays = ArrayRecord({key: value for key, value in content[ARRAYS_KEY].items()})
        local = self.state.get(LOCAL_NORMS_KEY)
        for key, value in local.items() if local is not None else ():
            arrays[key] = value
        return arrays

    def reply_arrays(self, model: torch.nn.Module, num_steps: int, learning_rate: float) -> ArrayRecord:
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        norms = set(norm_state_keys(model))
        self.state[LOCAL_NORMS_KEY] = ArrayRecord({k: v for k, v in state.items() if k in norms})
        return ArrayRecord({k: v for k, v in state.items() if k not in norms})


class FedBNPlugin(FlowerStrategyPlugin):
    name = "fedbn"
    description = "FedAvg that keeps each site's normalisation layers (parameters and statistics) local"
    reference = "Li et al. 2021, FedBN: Federated Learning on Non-IID Features via Local Batch Normalization"
    client_hooks = FedBNClientHooks
    strategy_class = FedBN
    weighting = "num-examples"
