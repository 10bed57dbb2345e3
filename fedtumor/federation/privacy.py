"""Client-level differential privacy: Flower's client-side fixed-clipping wrapper around a strategy.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"):
each site clips its model update (the model it trained minus the global model it received) to
L2 norm ``dp-clipping-norm`` on its own machine (``client_app/privacy.py``), and the server
adds Gaussian noise of standard deviation ``dp-noise-multiplier x dp-clipping-norm / n`` to the
mean of the ``n`` clipped updates. ``dp-noise-multiplier = 0`` (the default) leaves the strategy
unwrapped.

:class:`ClientLevelDP` is Flower's ``DifferentialPrivacyClientSideFixedClipping`` with three
changes that let it sit in front of a fedtumor strategy:

- ``state_dict``/``load_state_dict`` are the wrapped strategy's, so a resumed run carries what
  it learnt; everything else the ServerApp reads (site names, round plans, failures) is in the
  run's ledger, which the wrapped strategy was built with, so nothing else is forwarded;
- a failed or rejected site does not void the round (Flower's wrapper skips aggregation on
  any error): the wrapped strategy's reply checks decide which updates are averaged;
- ``n`` is the number of updates actually averaged this round, not a fixed sample size, so
  the noise stays calibrated when collaborator selection or a failure changes it (the
  sensitivity of a mean of ``n`` updates clipped to C is C / n).

Only strategies whose training aggregation is Flower's FedAvg (a weighted mean of the sites'
models: ``fedavg``, ``fedprox``, and plugins that keep it) can carry this guarantee; the others
are refused with a one-line :class:`ConfigError` (see :func:`dp_refusal`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation.strategy import FedTumorStrategy


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
        if cls is not FedAvg:
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
    return ClientLevelDP(strategy, config.dp_noise_multiplier, config.dp_clipping_norm)


def privacy_summary(config: RunConfig) -> dict[str, Any]:
    """The DP settings for summary.json."""
    enabled = dp_enabled(config)
    return {
        "enabled": enabled,
        "mechanism": "client-side fixed clipping, server-side Gaussian noise" if enabled else None,
        "noise_multiplier": config.dp_noise_multiplier,
        "clipping_norm": config.dp_clipping_norm if enabled else None,
    }


class ClientLevelDP(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed-clipping DP wrapper in front of a fedtumor strategy."""

    def __init__(self, strategy: Strategy, noise_multiplier: float, clipping_norm: float):
        # num_sampled_clients is reset every round to the number of updates averaged.
        super().__init__(strategy, noise_multiplier, clipping_norm, num_sampled_clients=1)

    def __repr__(self) -> str:
        return f"ClientLevelDP({self.strategy!r}, noise_multiplier={self.noise_multiplier}, clip={self.clipping_norm})"

    def state_dict(self) -> dict[str, Any]:
        """The wrapped strategy's; the wrapper learns nothing (its noise comes from numpy's global generator)."""
        return self.strategy.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.strategy.load_state_dict(state)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        # The wrapped strategy checks each reply, records it, and averages the sound ones.
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        self.num_sampled_clients = max(1, updates_averaged(self.strategy, server_round, replies))
        return self._add_noise_to_aggregated_arrays(arrays), metrics


def updates_averaged(strategy: Strategy, server_round: int, replies: list[Message]) -> int:
    """How many site updates went into this round's mean: the reply checks' verdict where kept."""
    if isinstance(strategy, FedTumorStrategy):
        # The ledger counts rounds as the run does (a resumed run's strategy offsets Flower's).
        counted = strategy.ledger.updates_averaged(server_round + strategy.options.round_offset)
        if counted is not None:
            return counted
    return sum(not reply.has_error() for reply in replies)
