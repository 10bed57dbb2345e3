"""FedAvg (McMahan et al. 2017): the example-weighted mean of the sites' models."""

from fedtumor.federation.in_place_fedavg import InPlaceFedAvg
from fedtumor.federation.plugin import FlowerStrategyPlugin
from fedtumor.federation.strategy import FedTumorStrategy


class FedAvg(FedTumorStrategy, InPlaceFedAvg):
    """Flower's FedAvg behind fedtumor's reply checks."""


class FedAvgPlugin(FlowerStrategyPlugin):
    name = "fedavg"
    description = "Federated averaging, weighted by each site's number of training subjects"
    reference = "McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from Decentralized Data"
    strategy_class = FedAvg
    weighting = "num-examples"
