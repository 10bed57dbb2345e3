"""FedAdam (Reddi et al. 2021): Adam on the server over the averaged site update."""

from flwr.serverapp.strategy import FedAdam as FlowerFedAdam

from strategies.base import FedTumorStrategy
from strategies.plugin import FlowerStrategyPlugin, Parameter


class FedAdam(FedTumorStrategy, FlowerFedAdam):
    """Flower's FedAdam behind fedtumor's reply checks."""


class FedAdamPlugin(FlowerStrategyPlugin):
    name = "fedadam"
    description = "Adaptive server optimiser (Adam) on the averaged update"
    reference = "Reddi et al. 2021, Adaptive Federated Optimization"
    parameters = {
        "eta": Parameter(1e-2, "server learning rate"),
        "eta-l": Parameter(1e-2, "client learning rate (informational, as in Flower)"),
        "beta-1": Parameter(0.9, "first-moment decay"),
        "beta-2": Parameter(0.99, "second-moment decay"),
        "tau": Parameter(1e-3, "adaptivity: larger is closer to FedAvgM"),
    }
    strategy_class = FedAdam
