"""Rounds after a node is lost: who a SuperLink-written reply belongs to, and a bounded wait for nodes.

Two facts of Flower 1.41 make a lost SuperNode costly in a live federation:

- when a node misses its heartbeats (it sends one every 30 s and is declared unavailable after
  two missed, ``HEARTBEAT_PATIENCE``), the SuperLink itself answers the node's pending message
  with "Node Unavailable". That reply comes from the SuperLink (``src_node_id`` 1), so a reply
  read by its sender names no site, and the node looks as if it never replied at all: one
  failure shows up twice, under neither site's name. :func:`asked_node_of` finds the node the
  reply answers through ``reply_to_message_id``, which Flower sets on every reply;
- a Flower strategy samples nodes only once ``min_available_nodes`` are connected and waits for
  them without end ("Waiting for nodes to connect"). fedtumor reads ``min-available-nodes`` as
  the quorum to *start* a run: once it has started, a round goes ahead with the nodes that are
  connected as long as ``min-train-replies`` of them are (:func:`running_quorum`), and
  :class:`QuorumGrid` bounds the wait for those: after ``wait_s`` below the quorum the round
  fails with a one-line error and the run stops, resumable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from flwr.app import Message

SUPERLINK_NODE_ID = 1  # flwr.common.constant.SUPERLINK_NODE_ID: the sender of SuperLink-written replies


class NodesUnavailableError(RuntimeError):
    """Too few nodes stayed connected for a round of a started run to go ahead."""


def asked_nodes(messages: Iterable[Message]) -> dict[str, int]:
    """``{message id: destination node}`` of messages the grid has sent (it sets their ids in place)."""
    return {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}


def asked_node_of(reply: Message, asked: Mapping[str, int]) -> int:
    """The node a reply answers: its sender, or for a SuperLink-written reply the node the message went to."""
    sender = reply.metadata.src_node_id
    if sender != SUPERLINK_NODE_ID:
        return sender
    return asked.get(reply.metadata.reply_to_message_id, sender)


def running_quorum(min_train_replies: int) -> int:
    """Nodes a round of a started run needs connected: the sound updates it needs, at least one."""
    return max(1, int(min_train_replies))


class QuorumGrid:
    """The part of a Grid Flower's node sampling uses, with its wait for ``needed`` nodes bounded.

    Flower's ``sample_nodes`` asks ``get_node_ids()`` once a second until enough nodes are
    connected; this one raises :class:`NodesUnavailableError` once fewer than ``needed`` have
    been connected for longer than ``wait_s``. Everything else goes to the wrapped grid.

    Example::

        grid = QuorumGrid(grid, needed=2, wait_s=600.0)
        messages = FedAvg.configure_train(strategy, server_round, arrays, config, grid)
    """

    def __init__(self, grid, needed: int, wait_s: float, clock: Callable[[], float] = time.monotonic):
        if needed < 1:
            raise ValueError(f"needed must be at least 1, got {needed}")
        if not wait_s > 0:
            raise ValueError(f"wait_s must be positive, got {wait_s}")
        self._grid = grid
        self.needed = needed
        self.wait_s = float(wait_s)
        self._clock = clock
        self._short_since: float | None = None

    def get_node_ids(self) -> list[int]:
        nodes = list(self._grid.get_node_ids())
        if len(nodes) >= self.needed:
            self._short_since = None
            return nodes
        now = self._clock()
        if self._short_since is None:
            self._short_since = now
        elif now - self._short_since > self.wait_s:
            raise NodesUnavailableError(
                f"only {len(nodes)} of the {self.needed} nodes a round needs (min-train-replies) stayed "
                f"connected for {self.wait_s:.0f} s (round-timeout-s); resume the run once the sites are back"
            )
        return nodes

    def __getattr__(self, name: str):
        return getattr(self._grid, name)
