"""Flower's FedAvg arithmetic over replies read in place, without deserialising them.

Flower's ``aggregate_arrayrecords`` deserialises every reply (``Array.numpy()``, a copy)
and allocates a weighted copy of it before adding; with the reply checks on top that is
more than Flower's own FedAvg costs. :func:`aggregate_arrayrecords_in_place` does the same
float operations in the same order (``a_1 w_1``, then ``+= a_i w_i`` with Flower's
weights) on read-only views, through one scratch buffer per array.

:class:`InPlaceFedAvg` is Flower's FedAvg with that aggregation. Put it last in the bases of
a strategy built on Flower's FedAvg (``class FedAdam(FedTumorStrategy, FlowerFedAdam,
InPlaceFedAvg)``): Flower's subclasses reach it through ``super().aggregate_train``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedtumor.federation.array_views import array_view


def aggregate_arrayrecords_in_place(records: list[RecordDict], weighting_metric_name: str) -> ArrayRecord:
    """``flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords``, same floats, replies read in place."""
    weights = [float(next(iter(record.metric_records.values()))[weighting_metric_name]) for record in records]
    total_weight = sum(weights)
    totals: dict[str, np.ndarray] = {}
    scratch: dict[np.dtype, np.ndarray] = {}  # one flat buffer per dtype, the size of the largest array
    for record, weight in zip(records, [w / total_weight for w in weights], strict=True):
        for array_record in record.array_records.values():
            for key, array in array_record.items():
                values = array_view(array)
                if key not in totals:
                    totals[key] = values * weight
                    continue
                total = totals[key]
                if scratch.get(total.dtype, np.empty(0)).size < total.size:
                    scratch[total.dtype] = np.empty(total.size, total.dtype)
                weighted = scratch[total.dtype][: total.size].reshape(total.shape)
                totals[key] += np.multiply(values, weight, out=weighted)  # a 0-d total is a NumPy scalar
    return ArrayRecord({key: Array(np.asarray(total)) for key, total in totals.items()})


class InPlaceFedAvg(FlowerFedAvg):
    """Flower's FedAvg, its weighted mean computed on the replies in place."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid_replies, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid_replies:
            return None, None
        contents = [message.content for message in valid_replies]
        return (
            aggregate_arrayrecords_in_place(contents, self.weighted_by_key),
            self.train_metrics_aggr_fn(contents, self.weighted_by_key),
        )
