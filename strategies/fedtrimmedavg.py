"""FedTrimmedAvg (Yin et al. 2018): coordinate-wise mean after trimming the extremes."""

from flwr.serverapp.strategy import FedTrimmedAvg as FlowerFedTrimmedAvg

from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter
from fedtumor.federation.strategy import FedTumorStrategy


class FedTrimmedAvg(FedTumorStrategy, FlowerFedTrimmedAvg):
    """Flower's FedTrimmedAvg behind fedtumor's reply checks."""


class FedTrimmedAvgPlugin(FlowerStrategyPlugin):
    name = "fedtrimmedavg"
    description = "Robust: coordinate-wise mean without the highest and lowest values"
    reference = "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    parameters = {"beta": Parameter(0.2, "fraction cut from each end")}
    strategy_class = FedTrimmedAvg
