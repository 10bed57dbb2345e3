"""Krum (Blanchard et al. 2017): the site model closest to its neighbours."""

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import Krum as FlowerKrum
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter
from fedtumor.federation.robust_aggregation import select_multikrum
from fedtumor.federation.strategy import FedTumorStrategy


class ChunkedKrum(FlowerKrum):
    """Flower's Krum with the site distances summed tensor by tensor, a chunk at a time (robust_aggregation.py)."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid_replies, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid_replies:
            return None, None
        selected = select_multikrum(
            [message.content for message in valid_replies], self.num_malicious_nodes, self.num_nodes_to_select
        )
        return (
            aggregate_arrayrecords(selected, self.weighted_by_key),
            self.train_metrics_aggr_fn(selected, self.weighted_by_key),
        )


class Krum(FedTumorStrategy, ChunkedKrum):
    """Krum behind fedtumor's reply checks."""


class KrumPlugin(FlowerStrategyPlugin):
    name = "krum"
    description = "Robust: picks the site model with the smallest distance to its nearest neighbours"
    reference = "Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent"
    parameters = {"num-malicious-nodes": Parameter(0, "sites assumed to be malicious")}
    strategy_class = Krum
