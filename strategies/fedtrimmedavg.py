"""FedTrimmedAvg (Yin et al. 2018): coordinate-wise mean after trimming the extremes."""

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedTrimmedAvg as FlowerFedTrimmedAvg

from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter
from fedtumor.federation.robust_aggregation import coordinate_trimmed_mean, coordinate_wise
from fedtumor.federation.strategy import FedTumorStrategy


class ChunkedFedTrimmedAvg(FlowerFedTrimmedAvg):
    """Flower's FedTrimmedAvg read in place a chunk at a time (robust_aggregation.py).

    Same kept values as Flower's, averaged in sorted order (float32 rounding apart, the same
    means); it leaves the replies' arrays in place.
    """

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid_replies, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid_replies:
            return None, None
        contents = [message.content for message in valid_replies]
        try:
            arrays = coordinate_wise(contents, lambda flats: coordinate_trimmed_mean(flats, self.beta))
        except ValueError as e:  # Flower's message
            raise AggregationError(
                f"Trimmed mean could not be computed. Likely cause: beta={self.beta} is too large."
            ) from e
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)


class FedTrimmedAvg(FedTumorStrategy, ChunkedFedTrimmedAvg):
    """FedTrimmedAvg behind fedtumor's reply checks."""


class FedTrimmedAvgPlugin(FlowerStrategyPlugin):
    name = "fedtrimmedavg"
    description = "Robust: coordinate-wise mean without the highest and lowest values"
    reference = "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    parameters = {"beta": Parameter(0.2, "fraction cut from each end")}
    strategy_class = FedTrimmedAvg
