"""FedProx (Li et al. 2020): FedAvg whose sites add a proximal term mu/2 ||w - w_global||^2."""

from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import RecordDict
from flwr.serverapp.strategy import FedProx as FlowerFedProx

from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.in_place_fedavg import InPlaceFedAvg
from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter
from fedtumor.federation.strategy import FedTumorStrategy


class FedProx(FedTumorStrategy, FlowerFedProx, InPlaceFedAvg):
    """Flower's FedProx (sends ``proximal-mu`` each round) behind fedtumor's reply checks."""


class FedProxClientHooks(ClientHooks):
    """Adds the proximal term to the local loss; mu comes from the round config."""

    def __init__(self, round_config: Mapping[str, Any], state: RecordDict):
        super().__init__(round_config, state)
        self.mu = float(round_config.get("proximal-mu", 0.0))
        self.global_params: list[torch.Tensor] = []

    def load_global(self, model: torch.nn.Module, content: RecordDict) -> None:
        super().load_global(model, content)
        self.global_params = [p.detach().clone() for p in model.parameters()]

    def extra_loss(self, model: torch.nn.Module) -> torch.Tensor | None:
        if self.mu == 0.0:
            return None
        squared = sum(((p - g.to(p.device)) ** 2).sum() for p, g in zip(model.parameters(), self.global_params))
        return 0.5 * self.mu * squared


class FedProxPlugin(FlowerStrategyPlugin):
    name = "fedprox"
    description = "FedAvg plus a proximal term that keeps local models near the global one"
    reference = "Li et al. 2020, Federated Optimization in Heterogeneous Networks"
    parameters = {"proximal-mu": Parameter(0.01, "weight mu of the proximal term")}
    client_hooks = FedProxClientHooks
    strategy_class = FedProx
    weighting = "num-examples"  # the proximal term is local; the server averages as FedAvg
