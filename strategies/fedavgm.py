"""FedAvgM (Hsu et al. 2019): FedAvg with server-side momentum on the averaged update."""

from flwr.serverapp.strategy import FedAvgM as FlowerFedAvgM

from strategies.base import FedTumorStrategy
from strategies.plugin import FlowerStrategyPlugin, Parameter


class FedAvgM(FedTumorStrategy, FlowerFedAvgM):
    """Flower's FedAvgM behind fedtumor's reply checks."""


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
