"""The privacy audit's measures: a membership-inference attack's AUC and the nominal epsilon of DP training.

The attack is the loss threshold of Yeom et al. 2018: a subject whose whole-volume loss is low
is guessed to be one the sites trained on. Its AUC is 0.5 for guessing and 1 when every member
is identified.

The nominal epsilon is what Flower's noise calibration implies for equal site weights and no
sampling amplification: T rounds of a Gaussian mechanism with noise multiplier z compose to
mu-GDP with mu = sqrt(T) / z (Dong, Roth, Su 2022), converted to (epsilon, delta).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr
from scipy.stats import rankdata

DELTA = 1e-5


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


def nominal_epsilon(noise_multiplier: float, rounds: int, delta: float = DELTA) -> float:
    """Epsilon at ``delta`` of ``rounds`` Gaussian releases with this noise multiplier (inf when 0)."""
    if noise_multiplier <= 0:
        return math.inf
    mu = math.sqrt(rounds) / noise_multiplier

    def delta_of(eps: float) -> float:  # mu-GDP to (eps, delta), in log space for large mu
        return float(ndtr(-eps / mu + mu / 2) - math.exp(eps + log_ndtr(-eps / mu - mu / 2))) - delta

    if delta_of(0.0) <= 0:
        return 0.0
    return float(brentq(delta_of, 0.0, mu**2 / 2 + 10 * mu + 10, xtol=1e-6))
