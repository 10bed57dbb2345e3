"""FedCostWAvg (Mächler et al. 2021): weight each site by its data share and its cost decrease.

Mächler, Ezhov, Kofler, Shit, Paetzold, Loehr, Wiestler, Menze. "FedCostWAvg: A New Averaging
for Better Federated Learning", MICCAI BrainLes 2021, arXiv 2111.08649; winner of the FeTS
Challenge 2021 (Task 1). The new global model is ``sum_j w_j M_j`` over the replying sites j:

    w_j = alpha * s_j / S + (1 - alpha) * k_j / K,    S = sum_j s_j,   K = sum_j k_j,
    k_j = c(M^{i-1}) / c(M_j^i)

with s_j the site's training subjects (``num-examples``), k_j the ratio of the site's cost
before this round's local training to its cost after it, and alpha = 0.5 as in the paper.
The costs we use: c(M^{i-1}) is ``loss-before``, the mean loss of the received global model on
a fixed set of the site's training patches before local training, and c(M_j^i) is
``loss-after``, the trained model's loss on the same patches (sites report both because the
round config carries ``report-loss-before: True``; a site that sends no ``loss-after`` is
scored by ``loss``, its last epoch's running training loss). A site whose cost fell more gets
more weight; the weights sum to 1.

If the replies lack ``loss-before`` or a cost is not a positive finite number, the round falls
back to data-share weights (FedAvg) and logs a warning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.common.logger import FLOWER_LOGGER as log
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedtumor.core.errors import ConfigError
from fedtumor.federation.array_views import weighted_sum
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter, ParameterValue
from fedtumor.federation.replies import describe_reply
from fedtumor.federation.strategy import FedTumorStrategy
from fedtumor.federation.wire import LOSS_AFTER_KEY, LOSS_BEFORE_KEY, LOSS_KEY, REPORT_LOSS_BEFORE_KEY


def shares(values: Sequence[float]) -> list[float]:
    """Each value's share of their sum."""
    total = sum(values)
    return [value / total for value in values]


def costs(replies: Sequence[Message], key: str) -> list[float] | None:
    """Each reply's metric ``key`` when every reply has it as a positive finite number, else None."""
    values = []
    for message in replies:
        value = next(iter(message.content.metric_records.values())).get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            return None
        values.append(float(value))
    return values


def costs_after(replies: Sequence[Message]) -> list[float] | None:
    """Cost after local training: ``loss-after`` (same patches as ``loss-before``), else ``loss``."""
    return costs(replies, LOSS_AFTER_KEY) or costs(replies, LOSS_KEY)


def weighted_average(records: Sequence[ArrayRecord], weights: Sequence[float]) -> ArrayRecord:
    """``sum_j w_j a_j`` per key; floating arrays keep their dtype, integer arrays are rounded back to theirs."""
    averaged = {}
    for key, first in records[0].items():
        total = weighted_sum(records, key, weights)
        dtype = np.dtype(first.dtype)
        if not np.issubdtype(dtype, np.floating):
            total = np.rint(total)
        averaged[key] = Array(np.asarray(total).astype(dtype, copy=False))
    return ArrayRecord(averaged)


class FlowerFedCostWAvg(FlowerFedAvg):
    """FedCostWAvg's server side as a plain Flower Message-API strategy."""

    def __init__(self, *, alpha: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.alpha = alpha
        self.last_weights: dict[str, float] = {}  # site id -> weight in the latest aggregation

    def aggregation_weights(self, server_round: int, replies: Sequence[Message]) -> list[float]:
        data = shares([float(next(iter(m.content.metric_records.values()))[self.weighted_by_key]) for m in replies])
        before, after = costs(replies, LOSS_BEFORE_KEY), costs_after(replies)
        if before is None or after is None:
            log.warning(
                "round %d: FedCostWAvg needs positive '%s' and '%s' from every site; using data-share weights",
                server_round,
                LOSS_BEFORE_KEY,
                LOSS_KEY,
            )
            return data
        decrease = shares([b / a for b, a in zip(before, after)])
        return [self.alpha * d + (1 - self.alpha) * k for d, k in zip(data, decrease)]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        weights = self.aggregation_weights(server_round, valid)
        self.last_weights = {describe_reply(server_round, "train", m).site_id: w for m, w in zip(valid, weights)}
        log.info(
            "round %d: aggregation weights %s", server_round, {k: round(w, 4) for k, w in self.last_weights.items()}
        )
        contents = [message.content for message in valid]
        arrays = weighted_average([next(iter(c.array_records.values())) for c in contents], weights)
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)


class FedCostWAvg(FedTumorStrategy, FlowerFedCostWAvg):
    """FedCostWAvg behind fedtumor's reply checks; asks every site for ``loss-before``."""

    def hook_config(self, server_round: int) -> dict:
        return {**super().hook_config(server_round), REPORT_LOSS_BEFORE_KEY: True}


class FedCostWAvgPlugin(FlowerStrategyPlugin):
    name = "fedcostwavg"
    description = "Weights = alpha x data share + (1 - alpha) x share of the cost-decrease ratio (FeTS 2021 winner)"
    reference = "Mächler et al. 2021, FedCostWAvg: A New Averaging for Better Federated Learning (arXiv 2111.08649)"
    parameters = {"alpha": Parameter(0.5, "weight of the data share; 1 - alpha goes to the cost decrease")}
    strategy_class = FedCostWAvg

    def build(self, params: Mapping[str, ParameterValue], options: StrategyOptions) -> FedCostWAvg:
        if not 0.0 <= float(params["alpha"]) <= 1.0:
            raise ConfigError("run-config key 'strategy-config': fedcostwavg's 'alpha' must lie in [0, 1]")
        return super().build(params, options)
