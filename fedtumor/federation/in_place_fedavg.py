"""Flower's FedAvg arithmetic over replies read in place, without deserialising them.

Flower's ``aggregate_arrayrecords`` deserialises every reply (``Array.numpy()``, a copy)
and allocates a weighted copy of it before adding; with the reply checks on top that is
more than Flower's own FedAvg costs. :func:`weighted_means_in_place` does the same
float operations in the same order (``a_1 w_1``, then ``+= a_i w_i`` with Flower's
weights) on read-only views, a cache-sized chunk of every array at a time.

:class:`InPlaceFedAvg` is Flower's FedAvg with that aggregation. Put it last in the bases of
a strategy built on Flower's FedAvg (``class FedProx(FedTumorStrategy, FlowerFedProx,
InPlaceFedAvg)``): Flower's subclasses reach it through ``super().aggregate_train``, and
:meth:`InPlaceFedAvg.model_from_means` is where a subclass turns the means into its model
(``fedtumor/federation/in_place_fedopt.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedtumor.federation.array_views import array_view, weighted_total


def weighted_means_in_place(records: list[RecordDict], weighting_metric_name: str) -> dict[str, np.ndarray]:
    """The weighted mean of every array key over ``records``: Flower's FedAvg floats, as NumPy arrays.

    Flower's ``aggregate_arrayrecords`` visits the records in order and, within one, its
    ArrayRecords and keys in order; each key's total is the same sum in the same order here
    (:func:`weighted_total`), over read-only views of the replies.
    """
    weights = [float(next(iter(record.metric_records.values()))[weighting_metric_name]) for record in records]
    total_weight = sum(weights)
    terms: dict[str, tuple[list[np.ndarray], list[float]]] = {}
    for record, weight in zip(records, [w / total_weight for w in weights], strict=True):
        for array_record in record.array_records.values():
            for key, array in array_record.items():
                values, key_weights = terms.setdefault(key, ([], []))
                values.append(array_view(array))
                key_weights.append(weight)
    return {key: weighted_total(values, key_weights) for key, (values, key_weights) in terms.items()}


class InPlaceFedAvg(FlowerFedAvg):
    """Flower's FedAvg, its weighted mean computed on the replies in place."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid_replies, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid_replies:
            return None, None
        contents = [message.content for message in valid_replies]
        means = weighted_means_in_place(contents, self.weighted_by_key)
        return self.model_from_means(server_round, means), self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def model_from_means(self, server_round: int, means: dict[str, np.ndarray]) -> ArrayRecord:
        """The new global model from the weighted means: FedAvg's is the means themselves."""
        return ArrayRecord({key: Array(mean) for key, mean in means.items()})
