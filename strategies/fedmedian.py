"""FedMedian (Yin et al. 2018): the coordinate-wise median of the sites' models."""

from flwr.serverapp.strategy import FedMedian as FlowerFedMedian

from fedtumor.federation.plugin import FlowerStrategyPlugin
from fedtumor.federation.strategy import FedTumorStrategy


class FedMedian(FedTumorStrategy, FlowerFedMedian):
    """Flower's FedMedian behind fedtumor's reply checks."""


class FedMedianPlugin(FlowerStrategyPlugin):
    name = "fedmedian"
    description = "Robust: coordinate-wise median of the site models"
    reference = "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    strategy_class = FedMedian
