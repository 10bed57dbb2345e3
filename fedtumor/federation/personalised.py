"""summary.json's ``personalised`` section: global and personal scores per site, and their means.

Sites of a method with a personal model (FedBN, Ditto; ``client_app/personal.py``) reply the
global model's validation scores under the plain names and their personal model's under
``personal_`` (validation) and ``personal_heldout_`` (held-out test set, simulation only).
From each site's latest such reply::

    "personalised": {
      "sites": {"site-1": {"round": 8, "num_val": 3, "global_val": {...}, "personal_val": {...},
                           "personal_heldout": {...} or null}},
      "mean": {"global_val": {...}, "personal_val": {...}, "personal_heldout": {...} or null},
      "personal_heldout": "measured" or why not,
      "global_heldout": the server's held-out scores of the global model in that round, or null
    }

Validation means are weighted by the sites' validation subjects (as Flower aggregates them);
held-out means are plain means over the sites (every site scores the same subjects).
:func:`score_summary` and :func:`site_means` are shared with the FedAvg-FT baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedtumor.core.metrics import mean_dice
from fedtumor.core.training import SUMMARY_METRICS
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.wire import NUM_EXAMPLES_KEY, PERSONAL_HELDOUT_PREFIX, PERSONAL_PREFIX

NOT_MEASURED = "not measured: no site could read the held-out set (a deployment), or personal-heldout=never"


def score_summary(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float] | None:
    """The summary's scores (``SUMMARY_METRICS`` and ``mean_dice``) read under ``prefix``; None when absent."""
    scores = {name: float(metrics[prefix + name]) for name in SUMMARY_METRICS if prefix + name in metrics}
    if not {"dice_et", "dice_tc", "dice_wt"} <= set(scores):
        return None
    return {**scores, "mean_dice": mean_dice(scores)}


def site_means(scores: Sequence[Mapping[str, float] | None], weights: Sequence[float] | None = None) -> dict | None:
    """Per-metric (weighted) means over the sites that have scores; None when none has.

    Example:
        >>> site_means([{"dice_et": 0.25}, {"dice_et": 0.75}], weights=[3, 1])
        {'dice_et': 0.375}
    """
    pairs = [(s, w) for s, w in zip(scores, weights or [1.0] * len(scores), strict=True) if s is not None]
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return None
    names = set.intersection(*(set(s) for s, _ in pairs))
    return {name: sum(s[name] * w for s, w in pairs) / total for name in sorted(names, key=list(pairs[0][0]).index)}


def personalised_summary(ledger: SiteLedger) -> dict[str, Any] | None:
    """The ``personalised`` section from the ledger's evaluate replies; None when no site has a personal model."""
    latest: dict[str, tuple[int, Mapping[str, float]]] = {}
    for server_round in sorted({r for r, phase in ledger.replies if phase == "evaluate"}):
        for reply in ledger.replies_of(server_round, "evaluate"):
            if reply.error is None and score_summary(reply.metrics, PERSONAL_PREFIX) is not None:
                latest[reply.site_id] = (server_round, reply.metrics)
    if not latest:
        return None
    sites = {
        site: {
            "round": server_round,
            "num_val": int(metrics.get(NUM_EXAMPLES_KEY, 0)),
            "global_val": score_summary(metrics),
            "personal_val": score_summary(metrics, PERSONAL_PREFIX),
            "personal_heldout": score_summary(metrics, PERSONAL_HELDOUT_PREFIX),
        }
        for site, (server_round, metrics) in sorted(latest.items())
    }
    rows = list(sites.values())
    weights = [float(row["num_val"]) for row in rows]
    heldout = [row["personal_heldout"] for row in rows]
    last_round = max(row["round"] for row in rows)
    return {
        "sites": sites,
        "mean": {
            "global_val": site_means([row["global_val"] for row in rows], weights),
            "personal_val": site_means([row["personal_val"] for row in rows], weights),
            "personal_heldout": site_means(heldout),
        },
        "personal_heldout": "measured" if any(h is not None for h in heldout) else NOT_MEASURED,
        "global_heldout": score_summary(ledger.test_history.get(last_round, {})),
    }
