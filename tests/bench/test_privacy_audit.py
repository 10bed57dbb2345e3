"""The privacy audit's attack AUC, its standard error and the nominal epsilon, on hand-computed cases."""

import importlib.util
import math
import sys

import pytest
from scipy.stats import norm

from tests import REPO

_spec = importlib.util.spec_from_file_location("privacy_audit", REPO / "scripts" / "privacy_audit.py")
privacy_audit = importlib.util.module_from_spec(_spec)
sys.modules["privacy_audit"] = privacy_audit  # its dataclasses look their module up
_spec.loader.exec_module(privacy_audit)


@pytest.mark.parametrize(
    ("members", "non_members", "auc"),
    [
        ([0.1, 0.2], [0.8, 0.9], 1.0),  # every member has the lower loss
        ([0.8, 0.9], [0.1, 0.2], 0.0),  # every member has the higher loss
        ([1.0, 3.0], [2.0, 4.0], 0.75),  # pairs (1<2, 1<4, 3>2, 3<4): 3 of 4
        ([1.0, 2.0], [2.0, 3.0], 0.875),  # (1<2, 1<3, 2=2 counts 1/2, 2<3): 3.5 of 4
        ([0.5, 0.5], [0.5], 0.5),  # all tied: chance
        ([1.0], [0.0, 2.0, 3.0], 2 / 3),  # unequal group sizes
    ],
)
def test_attack_auc_is_the_share_of_member_non_member_pairs_ordered_by_loss(members, non_members, auc):
    assert privacy_audit.attack_auc(members, non_members) == pytest.approx(auc)


def test_attack_auc_needs_both_groups():
    with pytest.raises(ValueError, match="at least one member and one non-member"):
        privacy_audit.attack_auc([0.1], [])


def test_auc_standard_error_follows_hanley_mcneil():
    # AUC 0.5, 10 vs 10: Q1 = 1/3, Q2 = 1/3; var = (0.25 + 9 (1/3 - 1/4) * 2) / 100 = 0.0175.
    assert privacy_audit.auc_standard_error(0.5, 10, 10) == pytest.approx(math.sqrt(0.0175))
    assert privacy_audit.auc_standard_error(1.0, 10, 10) == 0.0


def test_nominal_epsilon_solves_the_gaussian_dp_delta_equation():
    for noise_multiplier, rounds in [(1.0, 1), (2.0, 5), (0.5, 3)]:
        eps = privacy_audit.nominal_epsilon(noise_multiplier, rounds, delta=1e-5)
        mu = math.sqrt(rounds) / noise_multiplier
        delta = norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)
        assert delta == pytest.approx(1e-5, rel=1e-3)


def test_more_noise_gives_a_smaller_epsilon_and_no_noise_none_at_all():
    values = [privacy_audit.nominal_epsilon(z, 5) for z in (0.03, 0.3, 1.0, 3.0)]
    assert values == sorted(values, reverse=True) and values[-1] > 0
    assert privacy_audit.nominal_epsilon(0.0, 5) == math.inf
    # Very little noise: huge epsilon, still finite (computed in log space).
    assert 1e3 < privacy_audit.nominal_epsilon(0.003, 3) < math.inf
