"""The privacy audit's measures: a membership-inference attack's AUC and the epsilon a DP run spent.

The attack is the loss threshold of Yeom et al. 2018: a subject whose whole-volume loss is low
is guessed to be one the sites trained on. Its AUC is 0.5 for guessing and 1 when every member
is identified.

The epsilon is not computed here: the run's ServerApp composed every noised round into Flower's
RDP accountant and wrote the total to summary.json (``fedtumor/federation/privacy.py``);
:func:`spent_epsilon` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import rankdata


def attack_auc(member_losses, nonmember_losses) -> float:
    """AUC of the rule "lower loss means member": P(member loss < non-member loss), ties count 1/2.

    The Mann-Whitney statistic from average ranks of the scores -loss.
    """
    members, others = np.asarray(member_losses, float), np.asarray(nonmember_losses, float)
    if members.size == 0 or others.size == 0:
        raise ValueError("the attack needs at least one member and one non-member")
    ranks = rankdata(-np.concatenate([members, others]))
    u = ranks[: members.size].sum() - members.size * (members.size + 1) / 2
    return float(u / (members.size * others.size))


def auc_standard_error(auc: float, n_members: int, n_others: int) -> float:
    """Hanley and McNeil (1982) standard error of an AUC estimate."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_members - 1) * (q1 - auc**2) + (n_others - 1) * (q2 - auc**2)) / (
        n_members * n_others
    )
    return math.sqrt(max(variance, 0.0))


def spent_epsilon(summary: Mapping[str, Any]) -> tuple[float, float | None]:
    """(epsilon spent, its delta) from a run's summary.json; (inf, None) for a run without DP."""
    dp = summary.get("differential_privacy") or {}
    if not dp.get("enabled"):
        return math.inf, None
    if dp.get("epsilon_spent") is None:
        raise ValueError("summary.json of this DP run has no epsilon_spent (written by an older fedtumor)")
    return float(dp["epsilon_spent"]), float(dp["delta"])
