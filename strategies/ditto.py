"""Ditto (Li et al. 2021): FedAvg for the global model, plus a personal model on every site.

Li, Hu, Beirami, Smith. "Ditto: Fair and Robust Federated Learning Through Personalization",
ICML 2021, Algorithm 1. With w the global model a site receives and v_k its personal model:

- the site trains a copy of w as in FedAvg and sends it; the server averages the copies
  weighted by ``num-examples`` (Flower's FedAvg);
- the site *also* trains v_k for the same local epochs on the same round's patches, on its
  loss plus ``(lambda / 2) ||v_k - w||^2`` (the proximal pull towards the w it received), and
  keeps v_k in its ``context.state`` (:data:`PERSONAL_MODEL_KEY`); v_k starts as the first
  global model the site sees. v_k never leaves the site.

``lambda`` = 0 makes v_k a purely local model; a large ``lambda`` keeps it close to the global
one. Every federated evaluation scores both on the site's validation subjects (``dice_et``,
``personal_dice_et``, ...) and, in simulation, v_k on the held-out set (run-config key
``personal-heldout``). Adam replaces the paper's SGD steps, as for the global copy.

Example (run config)::

    strategy = "ditto"
    strategy-config = "lambda=0.1"
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, RecordDict

from fedtumor.core.errors import ConfigError
from fedtumor.federation.client_hooks import ClientHooks, PersonalTrainer
from fedtumor.federation.in_place_fedavg import InPlaceFedAvg
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter, ParameterValue
from fedtumor.federation.strategy import FedTumorStrategy
from fedtumor.federation.wire import PERSONAL_LOSS_KEY

LAMBDA_KEY = "ditto-lambda"  # round config, server -> site
PERSONAL_MODEL_KEY = "ditto-personal-model"  # ArrayRecord in the node's context.state: v_k


class Ditto(FedTumorStrategy, InPlaceFedAvg):
    """FedAvg of the global copies; tells the sites ``lambda`` in every round config."""

    def __init__(self, *, personal_lambda: float = 0.1, **kwargs: Any) -> None:
        if not personal_lambda >= 0:
            raise ValueError(f"Ditto's lambda must be >= 0, got {personal_lambda}")
        super().__init__(**kwargs)
        self.personal_lambda = float(personal_lambda)

    def hook_config(self, server_round: int) -> dict:
        return {**super().hook_config(server_round), LAMBDA_KEY: self.personal_lambda}


def proximal_term(model: torch.nn.Module, anchor: list[torch.Tensor], weight: float) -> torch.Tensor:
    """``(weight / 2) * ||params(model) - anchor||^2`` over the trainable parameters."""
    squared = sum(((p - a.to(p.device)) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
    return 0.5 * weight * squared


class DittoClientHooks(ClientHooks):
    """Plain training of the global copy; the personal model trained beside it and kept in ``state``."""

    def __init__(self, round_config: Mapping[str, Any], state: RecordDict):
        super().__init__(round_config, state)
        self.personal_lambda = float(round_config.get(LAMBDA_KEY, 0.0))
        self.global_state: dict[str, torch.Tensor] = {}  # w as received
        self.global_params: list[torch.Tensor] = []  # its parameters: the proximal anchor

    def load_global(self, model: torch.nn.Module, content: RecordDict) -> None:
        super().load_global(model, content)
        self.global_state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        self.global_params = [p.detach().cpu().clone() for p in model.parameters()]

    def _load_personal_state(self, model: torch.nn.Module) -> bool:
        """v_k into ``model`` (which holds the global model); False before the site's first training."""
        personal = self.state.get(PERSONAL_MODEL_KEY)
        if personal is None:
            return False
        model.load_state_dict(personal.to_torch_state_dict())
        return True

    def train_personal(self, model: torch.nn.Module, train: PersonalTrainer) -> dict[str, float]:
        """Train v_k (from ``state``, else the received w) on the loss + the pull towards w; keep it."""
        personal = copy.deepcopy(model)  # the architecture; its weights are set next
        if not self._load_personal_state(personal):
            personal.load_state_dict(self.global_state)  # v_k starts as the first global model seen
        weight, anchor = self.personal_lambda, self.global_params
        pull = (lambda net: proximal_term(net, anchor, weight)) if weight > 0 else None
        stats = train(personal, pull)
        self.state[PERSONAL_MODEL_KEY] = ArrayRecord(
            {key: value.detach().cpu() for key, value in personal.state_dict().items()}
        )
        return {PERSONAL_LOSS_KEY: stats.loss}

    def load_personal(self, model: torch.nn.Module, content: RecordDict) -> bool:
        """v_k; before the site's first training, the global model it is sent (v_k's initial value)."""
        super().load_global(model, content)
        self._load_personal_state(model)
        return True

    def personal_arrays(self, content: RecordDict | None = None) -> ArrayRecord | None:
        """v_k as kept on the site; None before its first training."""
        personal = self.state.get(PERSONAL_MODEL_KEY)
        return ArrayRecord(personal.to_torch_state_dict()) if personal is not None else None


class DittoPlugin(FlowerStrategyPlugin):
    name = "ditto"
    description = "FedAvg plus a personal model per site, pulled towards the global one (lambda/2 ||v - w||^2)"
    reference = "Li et al. 2021, Ditto: Fair and Robust Federated Learning Through Personalization"
    parameters = {"lambda": Parameter(0.1, "weight lambda of the personal model's pull towards the global model")}
    client_hooks = DittoClientHooks
    strategy_class = Ditto

    def build(self, params: Mapping[str, ParameterValue], options: StrategyOptions) -> Ditto:
        value = float(params["lambda"])
        if not value >= 0:
            raise ConfigError(f"run-config key 'strategy-config': ditto's 'lambda' must be >= 0, got {value}")
        return Ditto(options=options, personal_lambda=value)
