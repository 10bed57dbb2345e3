"""The FeTS Challenge time model: profiles, a collaborator's round, the round, the validated-only score."""

import numpy as np
import pytest

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation.fets_ledger import FetsLedger, ledger_for_time_model
from fedtumor.federation.fets_profiles import (
    COMPUTE_PROFILES,
    NETWORK_PROFILES,
    ComputeProfile,
    NetworkProfile,
    fets_profile,
    fets_site_seconds,
    round_noise,
)
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.replies import SiteReply
from fedtumor.federation.simulated_time import convergence_score, fets_convergence_score
from fedtumor.federation.summary import run_summary

SITES = [f"site-{i}" for i in range(1, 9)]


def test_the_tables_hold_the_challenge_s_21_compute_and_16_network_profiles():
    assert (len(COMPUTE_PROFILES), len(NETWORK_PROFILES)) == (21, 16)
    for profile in COMPUTE_PROFILES:  # validating a patient costs more than training on one, at every site
        assert profile.validate.mean > profile.train.mean > 1.0
    assert all(p.download.mean > 1.0 and p.upload.sd >= 0.0 for p in NETWORK_PROFILES)


def test_a_site_keeps_its_profile_for_a_seed_and_seeds_give_other_hardware():
    first = [fets_profile(site, seed=0) for site in SITES]
    assert first == [fets_profile(site, seed=0) for site in SITES]
    assert first != [fets_profile(site, seed=1) for site in SITES]
    assert len({p.compute_index for p in first}) > 1  # sites differ
    for p in first:
        assert 0 <= p.compute_index < len(COMPUTE_PROFILES) and 0 <= p.network_index < len(NETWORK_PROFILES)


# No spread: every draw is its mean, so the sums can be done by hand.
COMPUTE = ComputeProfile.of((2.0, 0.0), (3.0, 0.0))  # 2 s to train on a patient, 3 s to validate one
NETWORK = NetworkProfile.of((10.0, 0.0), (7.0, 0.0))  # 10 s down, 7 s up


def test_a_collaborator_s_round_counts_patients_validation_and_network():
    rng = np.random.default_rng(0)
    # Validates 4 patients only: 10 + 4 * 3.
    assert fets_site_seconds(COMPUTE, NETWORK, rng, val_subjects=4, trained=False) == pytest.approx(22.0)
    # Trains 5 patients x 2 epochs and validates the global and its own model: 10 + 12 + 20 + 12 + 7.
    trained = fets_site_seconds(COMPUTE, NETWORK, rng, val_subjects=4, train_subjects=5, epochs=2, trained=True)
    assert trained == pytest.approx(61.0)
    tiny = ComputeProfile.of((0.1, 0.0), (0.2, 0.0))  # FeTS floors every draw at one second
    assert fets_site_seconds(tiny, NETWORK, rng, val_subjects=1, train_subjects=1, trained=True) == pytest.approx(
        10 + 1 + 1 + 1 + 7
    )


def test_each_round_draws_new_noise_that_repeats_for_the_same_seed():
    compute, network = COMPUTE_PROFILES[0], NETWORK_PROFILES[0]

    def seconds(seed, server_round):
        rng = round_noise("site-1", seed, server_round)
        return fets_site_seconds(compute, network, rng, val_subjects=3, train_subjects=6, trained=True)

    assert seconds(0, 1) == seconds(0, 1)
    assert len({seconds(0, r) for r in (1, 2, 3)}) == 3
    assert seconds(0, 1) != seconds(1, 1)


def _train(server_round, node_id, site_id, subjects):
    return SiteReply(server_round, "train", node_id, site_id, {"num-examples": float(subjects), "num-patches": 8.0})


def _evaluate(server_round, node_id, site_id, subjects):
    return SiteReply(server_round, "evaluate", node_id, site_id, {"num-examples": float(subjects)})


def _expected(ledger, site_id, server_round, **work):
    profile = ledger.profiles[site_id]
    rng = round_noise(site_id, ledger.seed, server_round)
    return fets_site_seconds(profile.compute, profile.network, rng, **work)


def test_the_round_lasts_as_long_as_its_slowest_collaborator_trained_or_not():
    ledger = FetsLedger(seed=3)
    ledger.plan_train(1, [1, 2, 3], [1, 2], {"local-epochs": 2}, [1, 2], {"local-epochs": 2})
    ledger.record(_train(1, 1, "site-1", 4))
    ledger.record(_train(1, 2, "site-2", 1))
    for node, site, subjects in ((1, "site-1", 2), (2, "site-2", 1), (3, "site-3", 200)):
        ledger.record(_evaluate(1, node, site, subjects))  # site-3 only validates, 200 patients
    ledger.record(SiteReply(1, "train", 4, "node-4", error="boom"))  # a failed site adds nothing

    expected = {
        1: _expected(ledger, "site-1", 1, val_subjects=2, train_subjects=4, epochs=2, trained=True),
        2: _expected(ledger, "site-2", 1, val_subjects=1, train_subjects=1, epochs=2, trained=True),
        3: _expected(ledger, "site-3", 1, val_subjects=200, trained=False),
    }
    rows = {scope: m["simulated_s"] for scope, split, m in ledger.site_rows(1) if split == "train"}
    assert rows == pytest.approx({"site-1": expected[1], "site-2": expected[2]})
    seconds, total = ledger.close_round(1)
    assert expected[3] == max(expected.values())  # 200 patients to validate: the untrained site is slowest
    assert seconds == pytest.approx(expected[3]) and total == pytest.approx(expected[3])
    assert ledger.sites[1].simulated_s == pytest.approx(expected[1])  # what fastest-first reads
    assert ledger.sites[3].simulated_s is None  # it did not train

    # Round 2: site-3 is not asked to validate; its earlier 200 patients no longer cost anything.
    ledger.plan_train(2, [1], [1], {"local-epochs": 1}, [1], {})
    ledger.record(_train(2, 1, "site-1", 4))
    seconds, total = ledger.close_round(2)
    assert seconds == pytest.approx(
        _expected(ledger, "site-1", 2, val_subjects=2, train_subjects=4, epochs=1, trained=True)
    )
    assert total == pytest.approx(expected[3] + seconds)


def _dice(value):
    return {"dice_et": value, "dice_tc": value, "dice_wt": value}


def test_fets_score_credits_only_validated_models_unlike_today_s():
    times, dice = [0.0, 100.0, 300.0], [0.1, 0.5, 0.9]
    # FeTS: 0.1 over [0, 100), 0.5 from then to the budget; the final model (0.9) was never validated.
    assert fets_convergence_score(times, dice, 1000) == pytest.approx((10 + 450) / 1000)
    # Today's also credits the final model from 300 s: 10 + 100 + 630.
    assert convergence_score(times, dice, 1000) == pytest.approx(0.74)
    assert fets_convergence_score([0.0], [0.4], 1000) == 0.0  # no round: nothing validated


def test_the_summary_scores_a_fets_run_without_its_final_model():
    ledger = FetsLedger(seed=0)
    ledger.close_round(0)
    ledger.record_test(0, _dice(0.2))
    for server_round, value in ((1, 0.4), (2, 0.8)):
        ledger.plan_train(server_round, [1], [1], {"local-epochs": 1}, [1], {})
        ledger.record(_train(server_round, 1, "site-1", 3))
        ledger.close_round(server_round)
        ledger.record_test(server_round, _dice(value))
    config = RunConfig(num_server_rounds=2, time_model="fets")
    summary = run_summary(ledger, config, n_nodes=1, wall_time_s=1.0, strategy_parameters={})
    end = ledger.round_end_s
    week = config.time_budget_s
    assert summary["time_model"] == "fets" and summary["simulated_time_s"] == pytest.approx(end[2])
    assert summary["convergence_score"] == pytest.approx((0.2 * end[1] + 0.4 * (week - end[1])) / week)


def test_time_model_is_checked_and_picks_the_ledger():
    with pytest.raises(ConfigError, match=r"^run-config key 'time-model': 'fast' is not one of fedtumor, fets$"):
        RunConfig(time_model="fast")
    with pytest.raises(ConfigError, match=r"^run-config key 'site-profiles': applies to time-model='fedtumor'"):
        RunConfig(time_model="fets", site_profiles="/tmp/profiles.csv")
    assert isinstance(ledger_for_time_model(RunConfig(time_model="fets", seed=5)), FetsLedger)
    today = ledger_for_time_model(RunConfig())
    assert type(today) is SiteLedger and today.profiles is not None
