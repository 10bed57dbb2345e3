"""Client-level DP accounting: Flower's RDP accountant per round, in the audit log and summary, across a resume."""

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from fedtumor.core.config import RunConfig, load_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.federation.conformance import as_serverapp, site_reply
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.privacy import ClientLevelDP, privacy_summary, with_client_level_dp
from fedtumor.federation.registry import build_strategy
from fedtumor.federation.summary import run_summary
from fedtumor.run.audit import AuditLog, verify_run
from fedtumor.run.files import AUDIT_FILE
from fedtumor.run.resume import load_resume_state
from fedtumor.run.writer import RunWriter
from server_app.round_close import RoundClose
from tests.strategies.replies import Grid

SITES = (1, 2, 3)
SIZE = 16


@pytest.fixture(autouse=True)
def serverapp_identity():
    with as_serverapp():
        yield


def dp_config(noise_multiplier: float = 1.0, **changes) -> RunConfig:
    return RunConfig(min_available_nodes=1, dp_noise_multiplier=noise_multiplier, dp_clipping_norm=2.0, **changes)


def dp_strategy(config: RunConfig, ledger: SiteLedger | None = None, round_offset: int = 0) -> ClientLevelDP:
    strategy = with_client_level_dp(build_strategy(config, ledger=ledger, round_offset=round_offset), config)
    assert isinstance(strategy, ClientLevelDP)
    return strategy


def train_round(strategy, flower_round: int, examples: dict[int, int]) -> ArrayRecord:
    """One training round: every node in ``examples`` sends an update weighted by its training subjects."""
    received = ArrayRecord({"w": Array(np.zeros(SIZE, np.float32))})
    messages = list(strategy.configure_train(flower_round, received, ConfigRecord(), Grid(examples)))
    replies = []
    for message in messages:
        node = message.metadata.dst_node_id
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(np.full(SIZE, 0.1 * node, np.float32))}),
                "metrics": MetricRecord({"num-examples": examples[node]}),
            }
        )
        replies.append(site_reply(node, content))
    aggregated, _ = strategy.aggregate_train(flower_round, replies)
    assert aggregated is not None
    return aggregated


def flower_epsilons(noise_multiplier: float, rounds: int, delta: float = 1e-5, sites: int = len(SITES)) -> list:
    """Epsilon after each of ``rounds`` identical Gaussian releases, from Flower's own accountant."""
    config = PrivacyConfig(delta, sites, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    accountant = RdpAccountant(config)
    epsilons = []
    for _ in range(rounds):
        accountant.compose(GaussianPrivacyEvent(noise_multiplier, sites, sites))
        epsilons.append(accountant.get_epsilon(delta))
    return epsilons


def epsilons_of(strategy: ClientLevelDP) -> list[float]:
    return [strategy.privacy_rounds[r]["epsilon"] for r in sorted(strategy.privacy_rounds)]


EQUAL = dict.fromkeys(SITES, 4)


def test_epsilon_after_k_rounds_is_flowers_accountant_composed_k_times():
    strategy = dp_strategy(dp_config(1.0))
    for flower_round in (1, 2, 3):
        train_round(strategy, flower_round, EQUAL)
    expected = flower_epsilons(1.0, 3)
    assert epsilons_of(strategy) == pytest.approx(expected, rel=1e-9)
    assert [strategy.privacy_rounds[r]["releases"] for r in (1, 2, 3)] == [1, 2, 3]
    assert strategy.privacy_so_far()["epsilon"] == pytest.approx(expected[-1], rel=1e-9)


def test_epsilon_grows_with_rounds_and_shrinks_with_more_noise():
    noisy, quiet = dp_strategy(dp_config(2.0)), dp_strategy(dp_config(0.7))
    for flower_round in (1, 2, 3, 4):
        train_round(noisy, flower_round, EQUAL)
        train_round(quiet, flower_round, EQUAL)
    for strategy in (noisy, quiet):
        eps = epsilons_of(strategy)
        assert all(a < b for a, b in zip(eps, eps[1:], strict=False)), eps
    assert all(n < q for n, q in zip(epsilons_of(noisy), epsilons_of(quiet), strict=True))


def test_a_smaller_delta_costs_a_larger_epsilon():
    loose, strict = dp_strategy(dp_config(1.0, dp_delta=1e-3)), dp_strategy(dp_config(1.0, dp_delta=1e-8))
    train_round(loose, 1, EQUAL)
    train_round(strict, 1, EQUAL)
    assert loose.privacy_so_far()["delta"] == 1e-3 and strict.privacy_so_far()["delta"] == 1e-8
    assert loose.privacy_so_far()["epsilon"] < strict.privacy_so_far()["epsilon"]
    assert strict.privacy_so_far()["epsilon"] == pytest.approx(flower_epsilons(1.0, 1, delta=1e-8)[0], rel=1e-9)


def test_unequal_site_weights_are_charged_for_the_largest_site_share():
    # Weights 1, 1, 4: the largest site moves the mean by 4/6 C; the noise std is z C / 3.
    strategy = dp_strategy(dp_config(1.0))
    train_round(strategy, 1, {1: 1, 2: 1, 3: 4})
    record = strategy.privacy_rounds[1]
    assert record["noise_multiplier"] == pytest.approx((1.0 * 2.0 / 3) / (2.0 * 4 / 6))
    assert record["epsilon"] == pytest.approx(flower_epsilons(record["noise_multiplier"], 1)[0], rel=1e-9)
    assert record["epsilon"] > flower_epsilons(1.0, 1)[0]


def test_round_close_writes_the_epsilon_into_the_audit_log_and_the_resume_state(tmp_path):
    config = dp_config(1.0)
    ledger = SiteLedger()
    strategy = dp_strategy(config, ledger)
    writer, audit = RunWriter(tmp_path / "run"), AuditLog(tmp_path / "run")
    close = RoundClose(strategy, writer, ledger, audit, evaluate=None, extra_state=lambda: {})
    for flower_round in (1, 2):
        close(flower_round, train_round(strategy, flower_round, EQUAL))
    entries = [json.loads(line) for line in (writer.run_dir / AUDIT_FILE).read_text().splitlines()]
    expected = flower_epsilons(1.0, 2)
    privacy = [entry["privacy"] for entry in entries if entry["event"] == "round"]
    assert [p["epsilon"] for p in privacy] == pytest.approx(expected, rel=1e-9)
    assert [(p["delta"], p["releases"]) for p in privacy] == [(1e-5, 1), (1e-5, 2)]
    assert verify_run(writer.run_dir).intact

    summary = privacy_summary(config, strategy)
    assert summary["epsilon_spent"] == pytest.approx(expected[-1], rel=1e-9)
    assert summary["delta"] == 1e-5 and summary["releases"] == 2
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["accounting"]["sampling"] == "no-amplification"

    # A resumed run: rebuilt from the saved state, it continues the count.
    saved = load_resume_state(writer.run_dir)
    resumed_ledger = SiteLedger()
    resumed_ledger.load_state_dict(saved.recorder["ledger"])
    resumed = dp_strategy(config, resumed_ledger, round_offset=saved.round)
    resumed.load_state_dict(saved.strategy)
    assert resumed.privacy_so_far() == strategy.privacy_so_far()
    train_round(resumed, 1, EQUAL)  # Flower's round 1 is the study's round 3
    assert epsilons_of(resumed) == pytest.approx(flower_epsilons(1.0, 3), rel=1e-9)
    assert resumed.privacy_rounds[3]["releases"] == 3


def test_summary_json_carries_the_epsilon_per_round_and_in_total():
    config = dp_config(1.5)
    ledger = SiteLedger()
    strategy = dp_strategy(config, ledger)
    for flower_round in (1, 2, 3):
        train_round(strategy, flower_round, EQUAL)
    summary = run_summary(ledger, config, len(SITES), 1.0, {}, strategy=strategy)["differential_privacy"]
    expected = flower_epsilons(1.5, 3)
    assert [r["epsilon"] for r in summary["rounds"]] == pytest.approx(expected, rel=1e-9)
    assert summary["epsilon_spent"] == pytest.approx(expected[-1], rel=1e-9)
    assert json.loads(json.dumps(summary)) == summary  # plain JSON values


def test_dp_off_reports_no_epsilon():
    summary = privacy_summary(RunConfig(), build_strategy(RunConfig(min_available_nodes=1)))
    assert summary["enabled"] is False
    assert summary["epsilon_spent"] is None and summary["delta"] is None and summary["rounds"] == []


def test_a_restored_accountant_gives_the_same_epsilon():
    strategy = dp_strategy(dp_config(1.0))
    for flower_round in (1, 2):
        train_round(strategy, flower_round, EQUAL)
    restored = dp_strategy(dp_config(1.0))
    restored.load_state_dict(json.loads(json.dumps(strategy.state_dict())))  # plain values, as the resume file
    assert restored.privacy_so_far() == strategy.privacy_so_far()
    assert restored.privacy_rounds == strategy.privacy_rounds


def test_a_resume_state_without_an_accountant_is_refused_in_one_line():
    strategy = dp_strategy(dp_config(1.0))
    old_state = strategy.strategy.state_dict()  # what a DP run saved before epsilon was accounted
    with pytest.raises(ConfigError, match=r"^run-config key 'resume': .*no privacy accountant") as raised:
        strategy.load_state_dict(old_state)
    assert "\n" not in str(raised.value)


def test_an_accountant_of_another_delta_is_refused_naming_the_key():
    strategy = dp_strategy(dp_config(1.0))
    train_round(strategy, 1, EQUAL)
    other = dp_strategy(dp_config(1.0, dp_delta=1e-6))
    with pytest.raises(ConfigError, match=r"^run-config key 'dp-delta': ") as raised:
        other.load_state_dict(strategy.state_dict())
    assert "\n" not in str(raised.value)


def test_a_node_joining_late_keeps_the_epsilon():
    strategy = dp_strategy(dp_config(1.0))
    train_round(strategy, 1, {1: 4, 2: 4})
    train_round(strategy, 2, {1: 4, 2: 4, 3: 4, 4: 4})
    assert strategy.privacy_accountant.config.population_size == 4
    assert epsilons_of(strategy) == pytest.approx(flower_epsilons(1.0, 2, sites=4), rel=1e-9)


@pytest.mark.parametrize("value", [0.0, 1.0, -1e-5, 2.0])
def test_dp_delta_out_of_range_is_named(value):
    with pytest.raises(ConfigError, match=r"^run-config key 'dp-delta': .*out of range"):
        load_run_config({"dp-delta": value})
