"""FedAvgM (Hsu et al. 2019): FedAvg with server-side momentum on the averaged update."""

import numpy as np
from flwr.serverapp.strategy import FedAvgM as FlowerFedAvgM

from fedtumor.federation.in_place_fedavg import InPlaceFedAvg
from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter
from fedtumor.federation.strategy import FedTumorStrategy


class FedAvgM(FedTumorStrategy, FlowerFedAvgM, InPlaceFedAvg):
    """Flower's FedAvgM behind fedtumor's reply checks; the momentum survives a resume."""

    def state_dict(self) -> dict:
        momentum = None if self.momentum_vector is None else list(self.momentum_vector)
        return {**super().state_dict(), "momentum_vector": momentum}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        momentum = state.get("momentum_vector")
        self.momentum_vector = None if momentum is None else [np.asarray(array) for array in momentum]


class FedAvgMPlugin(FlowerStrategyPlugin):
    name = "fedavgm"
    description = "FedAvg with server momentum, for non-IID sites"
    reference = (
        "Hsu et al. 2019, Measuring the Effects of Non-Identical Data Distribution for Federated Visual Classification"
    )
    parameters = {
        "server-learning-rate": Parameter(1.0, "server step size on the averaged update"),
        "server-momentum": Parameter(0.9, "server momentum"),
    }
    strategy_class = FedAvgM
    weighting = "num-examples"  # the momentum step is taken on the num-examples-weighted mean
