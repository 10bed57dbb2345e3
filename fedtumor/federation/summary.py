"""summary.json of a run, read from its ledger.

Strategy and its parameters, rounds, wall time, the sites and their training subjects, every
failed reply, the data manifests, the DP settings (with DP on, the epsilon spent after each
round), the final and best held-out scores and, with site profiles, the simulated time, the
time budget and the FeTS ``convergence_score`` of the held-out mean Dice over simulated time.
With personal models (FedBN, Ditto), ``personalised``: the sites' global and personal scores
(``fedtumor/federation/personalised.py``).

``status`` is ``completed``, or ``failed`` for a run that stopped early: then ``error`` (one
line) and ``last_completed_round`` say why and where, and the rest is what the completed
rounds gave. A run ended by early stopping is ``completed``; the ServerApp adds its
``stopped_early`` (round, best round, reason; null when the run used all its rounds).
``patches_seen`` is the compute spent: training patches of every sound update, all rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.serverapp.strategy import Strategy

from fedtumor.core.config import RunConfig
from fedtumor.core.metrics import mean_dice
from fedtumor.core.training import SUMMARY_METRICS
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.personalised import personalised_summary
from fedtumor.federation.privacy import privacy_summary
from fedtumor.federation.simulated_time import convergence_score, fets_convergence_score
from fedtumor.federation.wire import NUM_PATCHES_KEY


def site_subjects(ledger: SiteLedger) -> dict[str, float]:
    """Training subjects of every site that returned an update, by site id (its latest reply)."""
    subjects = {
        site.site_id: float(site.num_examples)
        for site in ledger.sites.values()
        if site.site_id is not None and site.num_examples is not None
    }
    return dict(sorted(subjects.items()))


def patches_seen(ledger: SiteLedger) -> int:
    """Training patches over all sites and rounds, counted from the sound updates' ``num-patches``."""
    return sum(
        int(metrics.get(NUM_PATCHES_KEY, 0)) for record in ledger.rounds.values() for metrics in record.train.values()
    )


def run_summary(
    ledger: SiteLedger,
    config: RunConfig,
    n_nodes: int,
    wall_time_s: float,
    strategy_parameters: Mapping[str, Any],
    *,
    error: str | None = None,
    last_completed_round: int | None = None,
    strategy: Strategy | None = None,
) -> dict[str, Any]:
    """The run's summary; with ``error`` that of a run that stopped after ``last_completed_round``.

    ``strategy`` is the one the run used: with client-level DP its accountant gives the epsilon spent.
    """
    history = ledger.test_history
    summary: dict[str, Any] = {
        "status": "completed" if error is None else "failed",
        "strategy": config.strategy,
        "strategy_parameters": dict(strategy_parameters),
        "rounds": config.num_server_rounds,
        "wall_time_s": round(wall_time_s, 2),
        "num_nodes": n_nodes,
        "sites": site_subjects(ledger),
        "patches_seen": patches_seen(ledger),
        "failed_replies": ledger.failures,
        "data_manifests": {site: hashes[-1] for site, hashes in sorted(ledger.manifests.items())},
        "differential_privacy": privacy_summary(config, strategy),
    }
    if error is not None:
        summary["error"] = " ".join(error.split())
        summary["last_completed_round"] = last_completed_round
    if history:
        last_round = max(history)
        summary["final"] = {name: history[last_round].get(name) for name in SUMMARY_METRICS}
        summary["final"]["round"] = last_round
        best_round = max(history, key=lambda r: mean_dice(history[r]))
        summary["best"] = {"round": best_round, "mean_dice": mean_dice(history[best_round])}
    if (personalised := personalised_summary(ledger)) is not None:  # FedBN, Ditto: the sites' personal models
        summary["personalised"] = personalised
    if ledger.profiles is not None:
        end_s = ledger.round_end_s
        summary["simulated_time_s"] = end_s[max(end_s)] if end_s else 0.0
        summary["time_budget_s"] = config.time_budget_s
        summary["time_model"] = config.time_model
        summary["convergence_score"] = heldout_convergence_score(
            ledger, config.time_budget_s, validated_only=config.time_model == "fets"
        )
    return summary


def heldout_convergence_score(ledger: SiteLedger, budget_s: float, validated_only: bool = False) -> float | None:
    """FeTS Task 1 score of the held-out mean Dice over simulated time; None without both.

    ``validated_only`` (time-model "fets"): as FeTS, the final model is not credited.
    """
    rounds = sorted(r for r in ledger.test_history if r in ledger.round_end_s)
    if not rounds:
        return None
    return (fets_convergence_score if validated_only else convergence_score)(
        [ledger.round_end_s[r] for r in rounds], [mean_dice(ledger.test_history[r]) for r in rounds], budget_s
    )
