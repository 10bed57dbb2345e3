"""The run-wide settings every strategy is built with.

A plugin's ``build(params, options)`` passes ``options`` to its strategy's constructor; the
:class:`~fedtumor.federation.strategy.FedTumorStrategy` mixin keeps them and hands the
sampling settings to Flower's strategy. ``fedtumor.federation.registry.strategy_options``
fills them from the run config; the defaults are those of a strategy built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedtumor.federation.fets_hooks import CollaboratorSelector, RoundHyperparameters, all_sites, constant
from fedtumor.federation.ledger import SiteLedger


@dataclass(frozen=True)
class StrategyOptions:
    """Sampling, reliability, FeTS hooks, client hooks and the run's ledger, fixed for the run."""

    # Sampling (run-config keys fraction-train, fraction-evaluate, min-available-nodes, seed)
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available_nodes: int = 2
    seed: int = 0  # also seeds the collaborator selector: rng([seed, round])
    # Reliability (docs/reliability.md): sound updates a round needs; update-norm bound (0: none)
    min_train_replies: int = 1
    max_update_norm: float = 0.0
    # Once a run has started, how long a round waits for min_train_replies connected nodes (round-timeout-s)
    node_wait_s: float = 1800.0
    # FeTS Task 1 hooks (fedtumor/federation/fets_hooks.py)
    collaborator_selector: CollaboratorSelector = all_sites
    round_hyperparameters: RoundHyperparameters = constant
    # The plugin whose client hooks every round config names; None: plain local training
    client_hook_name: str | None = None
    # Rounds completed before this process started (a resumed run): Flower's round 1 is this + 1
    round_offset: int = 0
    # Where the strategy records every site reply; None: a ledger of its own
    ledger: SiteLedger | None = None

    def flower_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any of Flower's Message-API strategies."""
        return {
            "fraction_train": self.fraction_train,
            "fraction_evaluate": self.fraction_evaluate,
            "min_train_nodes": 1,
            "min_evaluate_nodes": 1 if self.fraction_evaluate > 0 else 0,
            "min_available_nodes": self.min_available_nodes,
        }
