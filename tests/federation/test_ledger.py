"""The run's ledger: each site reply recorded once, read by the selector, the rows, the summary and a resume."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedtumor.core.config import RunConfig
from fedtumor.federation.conformance import FakeGrid, as_serverapp, site_reply
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.registry import build_strategy
from fedtumor.federation.replies import SITE_ERROR_CODE, SiteReply, site_error_reason
from fedtumor.federation.simulated_time import SiteProfile, SiteProfiles
from fedtumor.federation.strategy import RoundFailedError
from fedtumor.federation.summary import run_summary
from fedtumor.federation.wire import MANIFEST_KEY, SITE_RECORD_KEY
from fedtumor.run.resume import ResumeState, load_resume_state, rng_state, save_resume_state

GLOBAL = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
PROFILES = SiteProfiles({f"site-{i}": SiteProfile(1.0, 8, 8) for i in range(1, 5)})


@pytest.fixture(autouse=True)
def server_identity():
    with as_serverapp():
        yield


def train_reply(node_id: int, values, site: str, num_examples: int = 2) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.asarray(values, np.float32))}),
            "metrics": MetricRecord({"num-examples": num_examples, "loss": 0.5, "num-patches": 4}),
            SITE_RECORD_KEY: ConfigRecord({"site-id": site, MANIFEST_KEY: f"hash-of-{site}"}),
        }
    )
    return site_reply(node_id, content)


def one_round(ledger: SiteLedger, nodes=(11, 12, 13, 14)):
    """Round 1 of FedAvg: node 11 sound, 12 failed (before it ever replied), 13 rejected (NaN), 14 silent."""
    strategy = build_strategy(RunConfig(min_train_replies=1, min_available_nodes=1), ledger=ledger)
    messages = list(strategy.configure_train(1, GLOBAL, ConfigRecord({"learning-rate": 0.1}), FakeGrid(nodes)))
    by_node = {m.metadata.dst_node_id: m for m in messages}
    replies = [
        train_reply(11, [1, 1, 1, 1], "site-1"),
        Message(
            Error(code=SITE_ERROR_CODE, reason=site_error_reason("site-2", "truncated file")), reply_to=by_node[12]
        ),
        train_reply(13, [np.nan, 0, 0, 0], "site-3"),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    return strategy, arrays


def strategy_failure_reasons(ledger: SiteLedger) -> str:
    """What a round with too few updates would say: RoundFailedError names each failed site."""
    strategy = build_strategy(RunConfig(min_train_replies=4, min_available_nodes=1), ledger=ledger)
    with pytest.raises(RoundFailedError) as raised:
        strategy.check_enough_replies(1, [])
    return str(raised.value)


def test_each_reply_is_recorded_once_and_read_by_everyone():
    ledger = SiteLedger(PROFILES)
    strategy, arrays = one_round(ledger)
    np.testing.assert_array_equal(arrays["w"].numpy(), [1, 1, 1, 1])
    replies = ledger.replies_of(1, "train")
    assert sorted(r.node_id for r in replies) == [11, 12, 13, 14]  # one entry per node asked
    plan = ledger.plan(1, "train")
    assert sorted(plan.asked) == [11, 12, 13, 14] and plan.config["learning-rate"] == 0.1
    record = ledger.rounds[1]
    assert record.selected == (11, 12, 13, 14) and list(record.train) == [11]
    assert set(record.failed) == {12, 13, 14} and record.failed[13].startswith("rejected: array 'w' has NaN")
    assert [f["node_id"] for f in ledger.failures] == [14, 12, 13]  # the silent one is reported first
    assert ledger.sites[13].site_id == "site-3" and ledger.sites[13].failures == 1  # a rejected reply names its site
    # A site that fails before it ever replied is named by the site id its error reply gave.
    assert ledger.site_name(12) == "site-2" and ledger.sites[12].last_error == "site site-2: truncated file"
    assert {f["node_id"]: f["site"] for f in ledger.failures} == {12: "site-2", 13: "site-3", 14: "node-14"}
    assert "site-2: site site-2: truncated file" in strategy_failure_reasons(ledger)
    assert ledger.updates_averaged(1) == 1
    [(scope, split, metrics)] = ledger.site_rows(1)
    assert (scope, split, metrics["num_patches"]) == ("site-1", "train", 4.0)
    assert metrics["simulated_s"] == ledger.rounds[1].simulated_s[11] == ledger.sites[11].simulated_s
    assert ledger.manifests == {"site-1": ["hash-of-site-1"]}
    summary = run_summary(ledger, RunConfig(), n_nodes=4, wall_time_s=1.0, strategy_parameters={})
    assert summary["sites"] == {"site-1": 2.0} and summary["data_manifests"] == {"site-1": "hash-of-site-1"}
    assert strategy.state_dict() == {}  # the sites and rounds are the ledger's, not the strategy's


def test_a_failed_node_is_named_at_round_close_once_it_has_answered():
    ledger = SiteLedger()
    ledger.record(SiteReply(1, "train", 12, "node-12", error="timeout"))
    ledger.record(SiteReply(1, "evaluate", 12, "site-2", {"num-examples": 3.0}))
    assert ledger.failures[0]["site"] == "node-12"
    ledger.name_failures(1)
    assert ledger.failures[0]["site"] == "site-2"


def test_the_state_survives_a_resume_file_and_sites_move_to_their_new_node_ids(tmp_path):
    ledger = SiteLedger(PROFILES)
    one_round(ledger)
    assert ledger.close_round(1) is not None
    ledger.record_test(1, {"dice_wt": 0.5})
    state = ResumeState(1, {"w": np.zeros(4, np.float32)}, {}, {"ledger": ledger.state_dict()}, rng_state(), "0" * 64)
    save_resume_state(tmp_path, state)
    restored = SiteLedger(PROFILES)
    restored.load_state_dict(load_resume_state(tmp_path).recorder["ledger"])
    assert restored.state_dict() == ledger.state_dict()
    assert restored.rounds[1] == ledger.rounds[1] and restored.round_end_s == ledger.round_end_s
    # A new process: site-1 now answers from node 21 and keeps what was learnt about it.
    restored.record(SiteReply(2, "train", 21, "site-1", {"num-examples": 2.0, "num-patches": 4.0}))
    assert 11 not in restored.sites and restored.sites[21].rounds_trained == 2
    assert restored.sites[21].profile == PROFILES["site-1"]  # profiles are re-read, not saved
