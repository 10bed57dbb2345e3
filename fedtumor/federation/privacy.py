"""Client-level differential privacy: Flower's client-side fixed-clipping wrapper around a strategy.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"):
each site clips its model update (the model it trained minus the global model it received) to
L2 norm ``dp-clipping-norm`` on its own machine (``client_app/privacy.py``), and the server
adds Gaussian noise of standard deviation ``dp-noise-multiplier x dp-clipping-norm / n`` to the
mean of the ``n`` clipped updates. ``dp-noise-multiplier = 0`` (the default) leaves the strategy
unwrapped.

:class:`ClientLevelDP` is Flower's ``DifferentialPrivacyClientSideFixedClipping`` with these
changes that let it sit in front of a fedtumor strategy:

- a failed or rejected site does not void the round (Flower's wrapper skips aggregation on
  any error): the wrapped strategy's reply checks decide which updates are averaged;
- ``n`` is the number of updates actually averaged this round, not a fixed sample size, so
  the noise stays calibrated when collaborator selection or a failure changes it (the
  sensitivity of a mean of ``n`` updates clipped to C is C / n);
- every noised release is composed into Flower's ``RdpAccountant`` (Google's dp-accounting
  RDP backend) and the epsilon spent so far at ``dp-delta`` is kept per round, for the audit
  log and summary.json (:func:`round_privacy`, :func:`privacy_summary`);
- ``state_dict``/``load_state_dict`` carry the wrapped strategy's state and the accountant's,
  so a resumed run continues the count; everything else the ServerApp reads (site names,
  round plans, failures) is in the run's ledger, which the wrapped strategy was built with.

Accounting model (Flower's own wrapper cannot account here: it needs a fixed sample size,
equal weights and no failed replies). Neighbouring federations differ by one site
(add-or-remove-one); **no sampling amplification**: fedtumor's sites are selected (every site,
or a collaborator selector's pick), not Poisson-sampled, so each round is charged as a full
Gaussian release, the safe choice. The divisor n and the sites' weights (training subjects,
reported in summary.json) are treated as public, as Flower's accountant does. fedtumor's FedAvg
weights sites by training subjects, so one site moves the mean by up to C x max(w) / sum(w),
not C / n: each round's event uses the effective noise multiplier
``z x mean(w) / max(w)`` (= z for equal weights). The population is the number of nodes
connected (metadata only without amplification). Site metrics are sent without noise.

Only strategies whose training aggregation is Flower's FedAvg (a weighted mean of the sites'
models: ``fedavg``, ``fedprox``, and plugins that keep it) can carry this guarantee; the others
are refused with a one-line :class:`ConfigError` (see :func:`dp_refusal`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation.in_place_fedavg import InPlaceFedAvg
from fedtumor.federation.strategy import FedTumorStrategy

DP_STATE_KEY = "client-level-dp"  # the wrapper's part of the resume state
ACCOUNTING = {
    "accountant": "flwr RdpAccountant (dp-accounting RDP)",
    "neighboring_relation": NeighboringRelation.ADD_OR_REMOVE_ONE.value,
    "sampling": SamplingMethod.NO_AMPLIFICATION.value,
}


def dp_enabled(config: RunConfig) -> bool:
    return config.dp_noise_multiplier > 0


def dp_refusal(strategy: Strategy) -> str | None:
    """Why client-level DP cannot wrap ``strategy``; None when it can.

    The noise is calibrated to a mean of clipped updates, so the aggregation must be FedAvg's
    mean of the sites' models. Server optimisers (FedAvgM, FedAdam, FedYogi) would see noise
    only after their update; robust aggregators (median, trimmed mean, Krum) let one site move
    the result by up to C, not C / n; FedBN sends only part of the model and SCAFFOLD a second
    ArrayRecord of control variates, which client-side clipping cannot bound.
    """
    if not isinstance(strategy, FedAvg):
        return f"{type(strategy).__name__} is not a FedAvg strategy"
    for cls in type(strategy).__mro__:
        if cls is FedTumorStrategy or "aggregate_train" not in cls.__dict__:
            continue  # the mixin only filters replies
        if cls not in (FedAvg, InPlaceFedAvg):  # InPlaceFedAvg: the same mean, computed in place
            return f"{cls.__name__} replaces FedAvg's aggregation (the mean of the sites' models)"
        return None
    return None


def with_client_level_dp(strategy: Strategy, config: RunConfig) -> Strategy:
    """``strategy`` wrapped in :class:`ClientLevelDP` when ``dp-noise-multiplier`` > 0, else unchanged."""
    if not dp_enabled(config):
        return strategy
    if (why := dp_refusal(strategy)) is not None:
        raise ConfigError(
            f"run-config key 'dp-noise-multiplier': strategy {config.strategy!r} cannot run with "
            f"client-level DP ({why}); use fedavg or fedprox, or set dp-noise-multiplier=0"
        )
    return ClientLevelDP(strategy, config.dp_noise_multiplier, config.dp_clipping_norm, config.dp_delta)


def privacy_summary(config: RunConfig, strategy: Strategy | None = None) -> dict[str, Any]:
    """The DP settings for summary.json and, with the run's ``strategy``, the epsilon spent per round."""
    enabled = dp_enabled(config)
    spent = strategy.privacy_so_far() if isinstance(strategy, ClientLevelDP) else None
    return {
        "enabled": enabled,
        "mechanism": "client-side fixed clipping, server-side Gaussian noise" if enabled else None,
        "noise_multiplier": config.dp_noise_multiplier,
        "clipping_norm": config.dp_clipping_norm if enabled else None,
        "accounting": dict(ACCOUNTING) if enabled else None,
        "delta": config.dp_delta if enabled else None,
        "epsilon_spent": spent["epsilon"] if spent else (0.0 if enabled else None),
        "releases": spent["releases"] if spent else 0,
        "rounds": [strategy.privacy_rounds[r] for r in sorted(strategy.privacy_rounds)] if spent else [],
    }


def round_privacy(strategy: Strategy, server_round: int) -> dict[str, Any] | None:
    """The audit entry's ``privacy`` of a round: epsilon spent so far; None when DP is off."""
    if not isinstance(strategy, ClientLevelDP):
        return None
    record = strategy.privacy_rounds.get(server_round)
    if record is None:  # no release this round: the count so far
        return strategy.privacy_so_far()
    return {key: value for key, value in record.items() if key != "round"}


def privacy_config(delta: float, population: int) -> PrivacyConfig:
    return PrivacyConfig(
        target_delta=delta,
        population_size=population,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    )


class ClientLevelDP(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed-clipping DP wrapper in front of a fedtumor strategy, with an RDP accountant."""

    def __init__(self, strategy: Strategy, noise_multiplier: float, clipping_norm: float, delta: float = 1e-5):
        # num_sampled_clients is reset every round to the number of updates averaged. Flower's own
        # ``accountant`` stays None: its checks assume a fixed sample and equal weights.
        super().__init__(strategy, noise_multiplier, clipping_norm, num_sampled_clients=1)
        self.delta = delta
        self.privacy_accountant: RdpAccountant | None = None  # built at the first release, once nodes are known
        self.privacy_rounds: dict[int, dict[str, Any]] = {}  # study round -> epsilon spent after it
        self._nodes_seen = 0

    def __repr__(self) -> str:
        return f"ClientLevelDP({self.strategy!r}, noise_multiplier={self.noise_multiplier}, clip={self.clipping_norm})"

    def privacy_so_far(self) -> dict[str, Any]:
        """Epsilon spent at ``delta`` by every release so far (0 before the first)."""
        if self.privacy_accountant is None:
            return {"epsilon": 0.0, "delta": self.delta, "releases": 0}
        spent = self.privacy_accountant.get_privacy_spent(self.delta)
        return {"epsilon": spent.epsilon, "delta": spent.delta, "releases": spent.num_releases}

    # -- resume ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The wrapped strategy's state and the accountant's (its releases; the noise itself is not seeded)."""
        accountant = self.privacy_accountant.state_dict() if self.privacy_accountant is not None else None
        rounds = [self.privacy_rounds[r] for r in sorted(self.privacy_rounds)]
        return {"strategy": self.strategy.state_dict(), DP_STATE_KEY: {"accountant": accountant, "rounds": rounds}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if DP_STATE_KEY not in state:
            raise ConfigError(
                "run-config key 'resume': the resume state has no privacy accountant (saved by an older fedtumor), "
                "so the epsilon its rounds spent is unknown; start a new run"
            )
        saved = state[DP_STATE_KEY]
        self.strategy.load_state_dict(state["strategy"])
        self.privacy_accountant = None
        if saved["accountant"] is not None:
            self.privacy_accountant = _restored_accountant(saved["accountant"], self.delta)
        self.privacy_rounds = {int(record["round"]): dict(record) for record in saved["rounds"]}
        self._nodes_seen = self.privacy_accountant.config.population_size if self.privacy_accountant else 0

    # -- a round --------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._nodes_seen = max(self._nodes_seen, len(list(grid.get_node_ids())))
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        # The wrapped strategy checks each reply, records it, and averages the sound ones.
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        weights = averaged_weights(self.strategy, server_round, replies)
        self.num_sampled_clients = max(1, len(weights))
        noised = self._add_noise_to_aggregated_arrays(arrays)
        self._account(study_round(self.strategy, server_round), weights)
        return noised, metrics

    def _account(self, server_round: int, weights: list[float]) -> None:
        """Compose this round's release and keep the epsilon spent so far."""
        n = max(1, len(weights))
        # One site moves the weighted mean by up to C max(w) / sum(w); the noise std is z C / n.
        share = max(weights) / sum(weights) if weights and min(weights) > 0 else 1 / n
        effective = self.noise_multiplier / (n * share)
        accountant = self._accountant(max(self._nodes_seen, n))
        accountant.compose(GaussianPrivacyEvent(effective, n, accountant.config.population_size))
        self.privacy_rounds[server_round] = {
            "round": server_round,
            **self.privacy_so_far(),
            "noise_multiplier": effective,
            "updates_averaged": n,
        }

    def _accountant(self, population: int) -> RdpAccountant:
        if self.privacy_accountant is None:
            self.privacy_accountant = RdpAccountant(privacy_config(self.delta, population))
        elif population > self.privacy_accountant.config.population_size:
            # A node joined late. Without amplification the population is metadata: replay under the new one.
            state = self.privacy_accountant.state_dict()
            state["config"] = {**state["config"], "population_size": population}
            for composition in state["compositions"]:
                composition["event"] = {**composition["event"], "population_size": population}
            grown = RdpAccountant(dataclasses.replace(self.privacy_accountant.config, population_size=population))
            grown.load_state_dict(state)
            self.privacy_accountant = grown
        return self.privacy_accountant


def _restored_accountant(state: Mapping[str, Any], delta: float) -> RdpAccountant:
    """The accountant of a resume state; a one-line ConfigError when it does not fit this run."""
    try:
        accountant = RdpAccountant(privacy_config(delta, int(state["config"]["population_size"])))
        accountant.load_state_dict(dict(state))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"run-config key 'dp-delta': the resume state's privacy accountant does not fit this run "
            f"(delta {delta:g}): {' '.join(str(exc).split())}"
        ) from None
    return accountant


def study_round(strategy: Strategy, server_round: int) -> int:
    """The run's round number (a resumed run's FedTumorStrategy offsets Flower's)."""
    return server_round + strategy.options.round_offset if isinstance(strategy, FedTumorStrategy) else server_round


def averaged_weights(strategy: Strategy, server_round: int, replies: list[Message]) -> list[float]:
    """The FedAvg weight of each site update in this round's mean: the reply checks' verdict where kept."""
    key = strategy.weighted_by_key if isinstance(strategy, FedAvg) else "num-examples"
    if isinstance(strategy, FedTumorStrategy):
        record = strategy.ledger.rounds.get(study_round(strategy, server_round))
        if record is not None:
            return [float(metrics.get(key, 1.0)) for metrics in record.train.values()]
    weights = []
    for reply in replies:
        if not reply.has_error():
            metrics = next(iter(reply.content.metric_records.values()), {})
            weights.append(float(metrics.get(key, 1.0)))
    return weights
