"""A lost node: replies the SuperLink writes are named by the node they answer; the wait for nodes is bounded."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, Metadata, RecordDict

from fedtumor.core.config import RunConfig
from fedtumor.federation.conformance import as_serverapp
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.node_quorum import (
    SUPERLINK_NODE_ID,
    NodesUnavailableError,
    QuorumGrid,
    asked_node_of,
    asked_nodes,
    running_quorum,
)
from fedtumor.federation.registry import build_strategy
from tests.strategies.replies import Grid, record, reply


@pytest.fixture(autouse=True)
def serverapp_identity():
    with as_serverapp():  # Flower builds messages only inside a ServerApp
        yield


def sent(node_id: int, message_id: str) -> Message:
    message = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    message.metadata.__dict__["_message_id"] = message_id  # what the grid does when it pushes
    return message


def superlink_reply(to: Message) -> Message:
    """What the SuperLink writes for a node that missed its heartbeats (linkstate/utils.py)."""
    reply = Message(error=Error(code=5, reason="Error: Node Unavailable"), reply_to=to)
    reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    return reply


def test_a_node_unavailable_reply_is_the_asked_node_s_not_the_superlink_s():
    messages = [sent(11, "m-11"), sent(22, "m-22"), sent(33, "m-33")]
    asked = asked_nodes(messages)
    assert asked == {"m-11": 11, "m-22": 22, "m-33": 33}
    assert asked_node_of(superlink_reply(messages[2]), asked) == 33
    assert asked_node_of(superlink_reply(sent(44, "m-unknown")), asked) == SUPERLINK_NODE_ID  # nothing to map to
    site_reply = Message(RecordDict(), reply_to=messages[0])
    assert asked_node_of(site_reply, {}) == 11  # a site's own reply names its sender
    assert asked_nodes([Message(RecordDict(), dst_node_id=4, message_type="train")]) == {}  # not sent yet


class Nodes:  # noqa: D101 - connected-node counts, one per call (the last repeats)
    def __init__(self, *counts):
        self.counts = list(counts)

    def get_node_ids(self):
        return list(range(self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]))

    def create_message(self):
        return "passed through"


def test_the_wait_for_nodes_is_bounded_and_a_recovered_quorum_resets_it():
    now = [0.0]
    grid = QuorumGrid(Nodes(1, 1, 2, 1, 1, 1), needed=2, wait_s=10.0, clock=lambda: now[0])
    assert len(grid.get_node_ids()) == 1  # short since t=0
    now[0] = 8.0
    assert len(grid.get_node_ids()) == 1
    now[0] = 9.0
    assert len(grid.get_node_ids()) == 2  # back: the clock starts again
    now[0] = 15.0
    grid.get_node_ids()  # short since t=15
    now[0] = 25.0
    grid.get_node_ids()  # 10 s: not yet more than wait_s
    now[0] = 25.5
    with pytest.raises(NodesUnavailableError, match="only 1 of the 2 nodes .* 10 s"):
        grid.get_node_ids()
    assert grid.create_message() == "passed through"


def test_a_started_run_needs_the_replies_it_needs_and_bad_settings_are_refused():
    assert running_quorum(0) == 1 and running_quorum(2) == 2
    with pytest.raises(ValueError, match="needed"):
        QuorumGrid(Nodes(1), needed=0, wait_s=1.0)
    with pytest.raises(ValueError, match="wait_s"):
        QuorumGrid(Nodes(1), needed=1, wait_s=0.0)


def unavailable(node_id: int, server_round: int) -> Message:
    """The SuperLink's reply for a node that missed its heartbeats, in answer to ``instruction-<node>``."""
    metadata = Metadata(
        run_id=1, message_id=f"superlink-{node_id}", src_node_id=SUPERLINK_NODE_ID, dst_node_id=SUPERLINK_NODE_ID,
        reply_to_message_id=f"instruction-{node_id}", group_id=str(server_round), created_at=0.0, ttl=60.0,
        message_type="train",
    )  # fmt: skip
    return Message(metadata=metadata, error=Error(code=5, reason="Error: Node Unavailable - no heartbeat"))


ONES = {"w": np.ones(4)}


def train(strategy, server_round: int, connected: list[int], lost: set[int] = frozenset()):
    messages = strategy.configure_train(server_round, record({"w": np.zeros(4)}), ConfigRecord(), Grid(connected))
    for message in messages:  # what the grid does when it sends them
        message.metadata.__dict__["_message_id"] = f"instruction-{message.metadata.dst_node_id}"
    replies = [
        unavailable(node, server_round)
        if node in lost
        else reply(node, {"w": np.ones(4)}, f"site-{node}", num_examples=2)
        for node in (m.metadata.dst_node_id for m in messages)
    ]
    strategy.aggregate_train(server_round, replies)
    return sorted(m.metadata.dst_node_id for m in messages)


def test_a_lost_node_is_one_failure_named_by_its_site_and_the_next_round_goes_ahead_without_it():
    ledger = SiteLedger()
    config = RunConfig(min_available_nodes=3, min_train_replies=2, fraction_evaluate=0.0, round_timeout_s=5.0)
    strategy = build_strategy(config, ledger=ledger)
    assert train(strategy, 1, [1, 2, 3]) == [1, 2, 3]
    assert train(strategy, 2, [1, 2, 3], lost={3}) == [1, 2, 3]  # node 3 dies mid-round
    assert [(f["round"], f["site"], f["node_id"]) for f in ledger.failures] == [(2, "site-3", 3)]
    assert "Node Unavailable" in ledger.failures[0]["error"]
    # Two of three connected: min-train-replies=2 is met, so round 3 samples them without waiting.
    assert train(strategy, 3, [1, 2]) == [1, 2]
    assert train(strategy, 4, [1, 2, 3]) == [1, 2, 3]  # restarted: it trains again
    with pytest.raises(NodesUnavailableError, match="only 1 of the 2 nodes"):
        train(strategy, 5, [1])  # below the running quorum for longer than round-timeout-s
