"""Warm the sites up before round 1: each ClientApp imports its libraries and loads its data.

A Ray worker in a simulation, or a node worker in a deployment, imports the ClientApp (torch,
MONAI, TorchIO) and loads its site's data on the first message it gets, so round 1 used to
cost several steady rounds. The ServerApp pushes one ``query.warm_up`` message to every node
as soon as the nodes are there, prepares its own side (held-out set, tracking, model) while
the sites load, and collects the replies just before round 1. The replies carry nothing the
run uses: a site that cannot load its data says so again, as a failed reply, in round 1.

Example::

    pending = start_warm_up(grid, list(grid.get_node_ids()))
    ...  # the ServerApp's own set-up
    finish_warm_up(grid, pending, timeout_s=600.0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.logger import FLOWER_LOGGER as log

from fedtumor.federation.wire import CONFIG_KEY

WARM_UP_ACTION = "warm_up"
WARM_UP_MESSAGE_TYPE = f"{MessageType.QUERY}.{WARM_UP_ACTION}"
WARM_UP_GROUP = "warm-up"


@dataclass
class PendingWarmUp:
    message_ids: list[str]
    started: float


def start_warm_up(grid, node_ids: list[int]) -> PendingWarmUp:
    """Push one warm-up message to each node; return without waiting for the replies."""
    messages = [
        Message(
            RecordDict({CONFIG_KEY: ConfigRecord()}),
            dst_node_id=node,
            message_type=WARM_UP_MESSAGE_TYPE,
            group_id=WARM_UP_GROUP,
        )
        for node in node_ids
    ]
    return PendingWarmUp(list(grid.push_messages(messages)), time.perf_counter())


def finish_warm_up(grid, pending: PendingWarmUp, timeout_s: float) -> int:
    """Wait for the warm-up replies (at most ``timeout_s``), log how many sites are ready; that number."""
    replies = grid.receive(pending.message_ids, timeout=timeout_s)
    ready = sum(not reply.has_error() for reply in replies)
    seconds = time.perf_counter() - pending.started
    log.info("fedtumor: warm-up: %d of %d sites ready in %.1fs", ready, len(pending.message_ids), seconds)
    return ready
