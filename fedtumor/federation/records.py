"""What the server knows of each site and round, as the FeTS hooks and the run's records read it.

The :class:`~fedtumor.federation.ledger.SiteLedger` keeps these up to date from the site
replies; collaborator selectors get :class:`SiteInfo` records, round-hyperparameter
schedules a :class:`TrainingHistory` of :class:`RoundRecord` s. This module imports neither
Flower nor torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedtumor.core.ordering import natural_key
from fedtumor.federation.simulated_time import SiteProfile
from fedtumor.federation.wire import LOSS_KEY, NUM_EXAMPLES_KEY


@dataclass(frozen=True)
class SiteInfo:
    """What the server has learned about one node from its replies (None: not yet known)."""

    node_id: int
    site_id: str | None = None
    num_examples: int | None = None  # training subjects
    num_val_examples: int | None = None  # validation subjects (federated validation)
    loss: float | None = None  # mean training loss of the last local epoch of its last training
    loss_before: float | None = None  # loss of the received global model, when the site reports it
    num_patches: int | None = None  # patches processed in its last training (all local epochs)
    train_seconds: float | None = None  # real seconds its last training took
    last_trained_round: int | None = None
    rounds_trained: int = 0
    rounds_selected: int = 0
    failures: int = 0
    last_error: str | None = None
    train_metrics: Mapping[str, float] = field(default_factory=dict)  # its last training reply
    val_metrics: Mapping[str, float] = field(default_factory=dict)  # its last validation reply
    profile: SiteProfile | None = None  # simulated hardware, when the server has profiles
    simulated_s: float | None = None  # simulated duration of its last training round


@dataclass(frozen=True)
class RoundRecord:
    """One round as the strategy configured it and the replies it got (keyed by node id)."""

    server_round: int
    offered: tuple[int, ...]  # node ids the selector chose from
    selected: tuple[int, ...]
    hyperparameters: Mapping[str, float | int]
    train: dict[int, Mapping[str, float]] = field(default_factory=dict)
    evaluate: dict[int, Mapping[str, float]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    simulated_s: dict[int, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        """Simulated duration: its slowest site, None without site profiles."""
        return max(self.simulated_s.values()) if self.simulated_s else None

    def mean_train_loss(self) -> float | None:
        """Training loss averaged over the sites, weighted by training subjects."""
        pairs = [(m[LOSS_KEY], m.get(NUM_EXAMPLES_KEY, 1.0)) for m in self.train.values() if "loss" in m]
        total = sum(weight for _, weight in pairs)
        return sum(loss * weight for loss, weight in pairs) / total if total > 0 else None


@dataclass(frozen=True)
class TrainingHistory:
    """What a hyperparameter schedule sees: run-config defaults, completed rounds, the sites."""

    defaults: Mapping[str, float | int]
    rounds: tuple[RoundRecord, ...] = ()
    sites: tuple[SiteInfo, ...] = ()

    @property
    def last(self) -> RoundRecord | None:
        return self.rounds[-1] if self.rounds else None


@dataclass(frozen=True)
class RoundPlan:
    """One phase of a round as it was sent: the node ids asked (in message order) and the config."""

    asked: tuple[int, ...]
    config: Mapping[str, Any]
    aggregated: Mapping[str, float] | None = None  # evaluate: the strategy's aggregated metrics


def site_order(site: SiteInfo) -> tuple:
    """Known sites by site id (natural order), then unknown ones by node id."""
    if site.site_id is None:
        return (1, [], site.node_id)
    return (0, natural_key(site.site_id), site.node_id)
