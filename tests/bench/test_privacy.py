"""The privacy audit's attack AUC and its standard error on hand-computed cases; the epsilon from summary.json."""

import json
import math

import pytest

from fedtumor.bench import privacy
from fedtumor.bench.privacy_study import AuditPlan, Setting, finished_with
from fedtumor.core.config import RunConfig, read_run_config
from fedtumor.federation.conformance import as_serverapp
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.summary import run_summary
from fedtumor.run.files import FINAL_MODEL_FILE, SUMMARY_FILE
from fedtumor.run.writer import RunWriter
from tests.federation.test_privacy_accounting import EQUAL, dp_config, dp_strategy, train_round


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
    assert privacy.attack_auc(members, non_members) == pytest.approx(auc)


def test_attack_auc_needs_both_groups():
    with pytest.raises(ValueError, match="at least one member and one non-member"):
        privacy.attack_auc([0.1], [])


def test_auc_standard_error_follows_hanley_mcneil():
    # AUC 0.5, 10 vs 10: Q1 = 1/3, Q2 = 1/3; var = (0.25 + 9 (1/3 - 1/4) * 2) / 100 = 0.0175.
    assert privacy.auc_standard_error(0.5, 10, 10) == pytest.approx(math.sqrt(0.0175))
    assert privacy.auc_standard_error(1.0, 10, 10) == 0.0


def test_the_epsilon_is_read_from_the_runs_summary():
    config = dp_config(1.0, dp_delta=1e-6)
    ledger = SiteLedger()
    strategy = dp_strategy(config, ledger)
    with as_serverapp():
        train_round(strategy, 1, EQUAL)
    written = run_summary(ledger, config, 3, 1.0, {}, strategy=strategy)
    summary = json.loads(json.dumps(written))  # as read back from summary.json
    assert privacy.spent_epsilon(summary) == (strategy.privacy_so_far()["epsilon"], 1e-6)
    off = run_summary(SiteLedger(), RunConfig(min_available_nodes=1), 3, 1.0, {})
    assert privacy.spent_epsilon(off) == (math.inf, None)


def test_a_dp_summary_without_epsilon_is_refused():
    with pytest.raises(ValueError, match="no epsilon_spent"):
        privacy.spent_epsilon({"differential_privacy": {"enabled": True, "noise_multiplier": 1.0}})


def test_the_audit_runs_no_dp_once_and_every_dp_setting_with_every_clipping_norm():
    plan = AuditPlan(3, 24, 4, 3, 0, "", noise_multipliers=(0.0, 0.01, 0.1), clipping_norms=(5.0, 15.0))
    assert [s.name for s in plan.settings()] == ["no-dp", "dp-z0.01-c5", "dp-z0.1-c5", "dp-z0.01-c15", "dp-z0.1-c15"]
    assert Setting(0.03, 5.0).run_config() == "dp-noise-multiplier=0.03 dp-clipping-norm=5.0"


def test_only_a_finished_run_of_the_same_config_and_sites_is_reused(tmp_path):
    config = read_run_config("num-server-rounds=2 seed=3")
    writer = RunWriter(tmp_path / "run")
    writer.write_config({**config.to_run_config(), "num-nodes": 3})
    assert not finished_with(writer.run_dir, config, 3)  # no summary, no final model yet
    writer.write_summary({"final": {}})
    (writer.run_dir / FINAL_MODEL_FILE).write_bytes(b"model")
    assert (writer.run_dir / SUMMARY_FILE).is_file()
    assert finished_with(writer.run_dir, config, 3)
    assert not finished_with(writer.run_dir, config, 2)
    assert not finished_with(writer.run_dir, config.replace(seed=4), 3)


def test_a_dp_run_without_an_accounted_epsilon_is_run_again(tmp_path):
    config = read_run_config("num-server-rounds=2 dp-noise-multiplier=0.5")
    writer = RunWriter(tmp_path / "run")
    writer.write_config({**config.to_run_config(), "num-nodes": 3})
    (writer.run_dir / FINAL_MODEL_FILE).write_bytes(b"model")
    writer.write_summary({"final": {}, "differential_privacy": {"enabled": True}})  # before epsilon was accounted
    assert not finished_with(writer.run_dir, config, 3)
    writer.write_summary({"final": {}, "differential_privacy": {"enabled": True, "epsilon_spent": 3.0}})
    assert finished_with(writer.run_dir, config, 3)
