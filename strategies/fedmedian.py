"""FedMedian (Yin et al. 2018): the coordinate-wise median of the sites' models."""

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedMedian as FlowerFedMedian

from fedtumor.federation.plugin import FlowerStrategyPlugin
from fedtumor.federation.robust_aggregation import coordinate_median, coordinate_wise
from fedtumor.federation.strategy import FedTumorStrategy


class ChunkedFedMedian(FlowerFedMedian):
    """Flower's FedMedian, same floats, read in place a chunk at a time (robust_aggregation.py).

    Unlike Flower's, it leaves the replies' arrays in place.
    """

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid_replies, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid_replies:
            return None, None
        contents = [message.content for message in valid_replies]
        return coordinate_wise(contents, coordinate_median), self.train_metrics_aggr_fn(contents, self.weighted_by_key)


class FedMedian(FedTumorStrategy, ChunkedFedMedian):
    """FedMedian behind fedtumor's reply checks."""


class FedMedianPlugin(FlowerStrategyPlugin):
    name = "fedmedian"
    description = "Robust: coordinate-wise median of the site models"
    reference = "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    strategy_class = FedMedian
