"""Krum (Blanchard et al. 2017): the site model closest to its neighbours."""

from flwr.serverapp.strategy import Krum as FlowerKrum

from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter
from fedtumor.federation.strategy import FedTumorStrategy


class Krum(FedTumorStrategy, FlowerKrum):
    """Flower's Krum behind fedtumor's reply checks."""


class KrumPlugin(FlowerStrategyPlugin):
    name = "krum"
    description = "Robust: picks the site model with the smallest distance to its nearest neighbours"
    reference = "Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent"
    parameters = {"num-malicious-nodes": Parameter(0, "sites assumed to be malicious")}
    strategy_class = Krum
