"""FedPIDAvg (Mächler et al. 2023): FedCostWAvg plus an integral term, read as a PID controller.

Mächler, Ezhov, Shit, Paetzold. "FedPIDAvg: A PID controller inspired aggregation method for
Federated Learning", BrainLes 2022, arXiv 2304.12117; winner of the FeTS Challenge 2022
(Task 1). The new global model is ``sum_j w_j M_j`` over the replying sites j:

    w_j = alpha * s_j / S + beta * k_j / K + gamma * m_j / I
    S = sum_j s_j,  K = sum_j k_j,  I = sum_j m_j

- proportional term, alpha = 0.45: s_j, the site's training subjects (``num-examples``);
- derivative term, beta = 0.45: k_j, the drop of the site's cost over this round's local
  training, ``loss-before - loss`` (a difference here, where FedCostWAvg uses a ratio);
- integral term, gamma = 0.1: m_j, the sum of the site's costs (``loss``, after local
  training) over the last ``window`` = 5 rounds it took part in, this one included; sites that
  have been doing badly for a while get more say.

In short: 0.45 data share + 0.45 loss decrease + 0.1 recent loss, with the decrease a
difference and "recent loss" a windowed sum, as in the paper. Costs are the ones of
:mod:`strategies.fedcostwavg`:
``loss-before`` is the received model's mean loss on the site's training patches,
``loss`` the mean training loss of its last local epoch. Loss histories live in the strategy,
keyed by site id (the reply's ``site`` ConfigRecord, else ``node-<id>``).

Our choices, not the paper's: a site whose cost rose gets k_j = 0 (not a negative weight);
if no site's cost fell (K = 0) or ``loss-before`` is missing, the derivative term uses the
data shares instead, and if ``loss`` is missing so does the integral term (both logged).
Weights are divided by alpha + beta + gamma so they sum to 1 for any coefficients. The
paper's other contribution, choosing each site's local iterations from a Poisson model of
site sizes, is a scheduling choice and not part of this aggregation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from flwr.app import Message
from flwr.common.logger import FLOWER_LOGGER as log

from fedtumor.core.errors import ConfigError
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter, ParameterValue
from fedtumor.federation.replies import describe_reply
from fedtumor.federation.strategy import FedTumorStrategy
from fedtumor.federation.wire import LOSS_BEFORE_KEY, LOSS_KEY, REPORT_LOSS_BEFORE_KEY
from strategies.fedcostwavg import FlowerFedCostWAvg, costs, costs_after, shares


class FlowerFedPIDAvg(FlowerFedCostWAvg):
    """FedPIDAvg's server side as a plain Flower Message-API strategy."""

    def __init__(self, *, alpha: float = 0.45, beta: float = 0.45, gamma: float = 0.1, window: int = 5, **kwargs):
        super().__init__(alpha=alpha, **kwargs)
        self.beta, self.gamma, self.window = beta, gamma, window
        self.loss_history: dict[str, deque[float]] = {}  # site id -> its last `window` losses

    def aggregation_weights(self, server_round: int, replies: Sequence[Message]) -> list[float]:
        data = shares([float(next(iter(m.content.metric_records.values()))[self.weighted_by_key]) for m in replies])
        before, after = costs(replies, LOSS_BEFORE_KEY), costs_after(replies)
        derivative = integral = data
        if before is not None and after is not None and any(b > a for b, a in zip(before, after)):
            derivative = shares([max(b - a, 0.0) for b, a in zip(before, after)])
        else:
            log.warning("round %d: FedPIDAvg has no cost decrease to weight by; using data shares", server_round)
        if after is not None:
            sites = [describe_reply(server_round, "train", message).site_id for message in replies]
            for site, loss in zip(sites, after):
                self.loss_history.setdefault(site, deque(maxlen=self.window)).append(loss)
            integral = shares([sum(self.loss_history[site]) for site in sites])
        else:
            log.warning("round %d: FedPIDAvg has no '%s' from every site; using data shares", server_round, LOSS_KEY)
        total = self.alpha + self.beta + self.gamma
        return [
            (self.alpha * p + self.beta * d + self.gamma * i) / total for p, d, i in zip(data, derivative, integral)
        ]


class FedPIDAvg(FedTumorStrategy, FlowerFedPIDAvg):
    """FedPIDAvg behind fedtumor's reply checks; asks every site for ``loss-before``."""

    def hook_config(self, server_round: int) -> dict:
        return {**super().hook_config(server_round), REPORT_LOSS_BEFORE_KEY: True}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "loss_history": {site: list(h) for site, h in self.loss_history.items()}}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        history = state.get("loss_history", {})
        self.loss_history = {site: deque(losses, maxlen=self.window) for site, losses in history.items()}


class FedPIDAvgPlugin(FlowerStrategyPlugin):
    name = "fedpidavg"
    description = "Weights from data share, loss decrease and recent losses, a PID view (FeTS 2022 winner)"
    reference = (
        "Mächler et al. 2023, FedPIDAvg: A PID controller inspired aggregation method for Federated Learning "
        "(arXiv 2304.12117)"
    )
    parameters = {
        "alpha": Parameter(0.45, "proportional: weight of the data share"),
        "beta": Parameter(0.45, "derivative: weight of the share of this round's loss decrease"),
        "gamma": Parameter(0.1, "integral: weight of the share of the site's summed recent losses"),
        "window": Parameter(5, "rounds of a site's loss history the integral term sums"),
    }
    strategy_class = FedPIDAvg

    def build(self, params: Mapping[str, ParameterValue], options: StrategyOptions) -> FedPIDAvg:
        coefficients = [float(params[name]) for name in ("alpha", "beta", "gamma")]
        if min(coefficients) < 0 or sum(coefficients) <= 0:
            raise ConfigError(
                "run-config key 'strategy-config': fedpidavg's alpha, beta, gamma must be >= 0, not all 0"
            )
        if int(params["window"]) < 1:
            raise ConfigError("run-config key 'strategy-config': fedpidavg's 'window' must be >= 1")
        return super().build(params, options)
