"""The conformance kit's in-process federation: simulated sites, a fake grid, the harness.

The kit drives a plugin's Flower strategy by hand, the way ``Strategy.start`` does
(``configure_train`` -> sites -> ``aggregate_train``), against a fake grid of five nodes and
simulated sites in this process: no SuperLink, no Ray. Each simulated site mirrors the
ClientApp: it applies the plugin's client hooks (``client_hooks_for`` on the round config,
with a per-node state that persists across rounds) to a tiny 3D model, Conv3d(4->3) +
InstanceNorm3d(affine=True), takes a few real Adam steps on its own random patches and
replies with ``num-examples``, ``loss``, ``num-patches``, ``train-seconds`` (``loss-before``
when the round config asks for it) and the ``site`` ConfigRecord. Everything crossing the
"network" (messages both ways, and node state between rounds) is serialised and read back,
as it is between real processes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.logger import FLOWER_LOGGER
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore.task_identity import TaskIdentity

from fedtumor.core.config import RunConfig
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.plugin import StrategyPlugin
from fedtumor.federation.registry import Registry, build_strategy, client_hooks_for
from fedtumor.federation.replies import SiteReply
from fedtumor.federation.strategy import FedTumorStrategy
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CONFIG_KEY,
    LEARNING_RATE_KEY,
    LOCAL_EPOCHS_KEY,
    LOSS_BEFORE_KEY,
    LOSS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    NUM_PATCHES_KEY,
    REPORT_LOSS_BEFORE_KEY,
    SITE_ID_KEY,
    SITE_RECORD_KEY,
    TRAIN_SECONDS_KEY,
)

NUM_NODES = 5
LOCAL_STEPS = 3
LEARNING_RATE = 0.01


# ------------------------------------------------------------------ the simulated federation
class TinySegmenter(torch.nn.Module):
    """Four MRI channels in, three region logits out, with affine instance norm (like the U-Net)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(4, 3, kernel_size=3, padding=1)
        self.norm = torch.nn.InstanceNorm3d(3, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def initial_model() -> TinySegmenter:
    torch.manual_seed(0)
    model = TinySegmenter()
    with torch.no_grad():  # norms away from their (1, 0) init, so FedBN-style hooks have something to keep
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.5, 0.5)
    return model


def _loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(model(inputs), targets)


@dataclass
class Site:
    """One simulated node: its own patches, its weight, and its persistent ``context.state``."""

    node_id: int
    site_id: str
    num_examples: int
    inputs: torch.Tensor
    targets: torch.Tensor
    state: RecordDict = field(default_factory=RecordDict)

    @classmethod
    def make(cls, index: int) -> Site:
        generator = torch.Generator().manual_seed(1000 + index)
        inputs = torch.randn(2, 4, 6, 6, 6, generator=generator) + 0.3 * index  # a site-specific shift
        targets = (inputs[:, :3] > 0.2).float()  # learnable from the input, so every site's loss can fall
        return cls(
            node_id=101 + index, site_id=f"site-{index + 1}", num_examples=2 + index, inputs=inputs, targets=targets
        )


class FakeGrid(Grid):
    """The only thing a strategy asks the grid while configuring: which nodes are connected."""

    def __init__(self, node_ids: Iterable[int]):
        self.node_ids = list(node_ids)
        self.calls = 0

    def get_node_ids(self) -> Iterable[int]:
        self.calls += 1  # a strategy asks once or twice per configure call; more means it waits for nodes
        if self.calls > 4:
            raise RuntimeError(f"the strategy waits for more than the kit's {len(self.node_ids)} connected nodes")
        return list(self.node_ids)

    def _unused(self, *args, **kwargs):
        raise NotImplementedError("the conformance kit sends and receives messages itself")

    set_run = run = create_message = push_messages = pull_messages = send_and_receive = _unused


def _wire(record: RecordDict) -> RecordDict:
    """What the other side reads: the records serialised and parsed back."""
    return recorddict_from_proto(recorddict_to_proto(record))


def numpy_arrays(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in arrays.items()}


@dataclass
class Harness:
    """A plugin, the registry its client hooks are looked up in, and helpers to run rounds."""

    plugin: type[StrategyPlugin]
    registry: Registry
    strategy_config: str = ""  # the plugin's parameters, "key=value ..." (default: its defaults)
    sites: list[Site] = field(default_factory=list)
    global_arrays: ArrayRecord = field(default_factory=ArrayRecord)
    # Round 1 on fresh sites gives the same replies every time: computed once per kit run.
    round_1: dict[str, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Fresh sites (empty node state) and the same initial global model."""
        self.sites = [Site.make(i) for i in range(NUM_NODES)]
        self.global_arrays = ArrayRecord(initial_model().state_dict())

    def site(self, node_id: int) -> Site:
        for site in self.sites:
            if site.node_id == node_id:
                return site
        raise LookupError(f"a message went to node {node_id}, which is not connected")

    def strategy(self) -> tuple[Strategy, SiteLedger]:
        """A fresh strategy, built the way the ServerApp builds it, and the ledger it records replies in."""
        # min-train-replies 1: the checks aggregate chosen subsets of replies; the run's minimum is not under test.
        config = RunConfig(
            strategy=self.plugin.name,
            strategy_config=self.strategy_config,
            learning_rate=LEARNING_RATE,
            min_available_nodes=2,
            min_train_replies=1,
        )
        ledger = SiteLedger()
        return build_strategy(config, self.registry, ledger=ledger), ledger

    def grid(self) -> FakeGrid:
        return FakeGrid(site.node_id for site in self.sites)

    def configure_train(self, strategy: Strategy, server_round: int, arrays: ArrayRecord) -> list[Message]:
        train_config = ConfigRecord({LEARNING_RATE_KEY: LEARNING_RATE, LOCAL_EPOCHS_KEY: 1})
        messages = strategy.configure_train(server_round, arrays, train_config, self.grid())
        return sorted(messages, key=lambda m: m.metadata.dst_node_id)

    def configure_evaluate(self, strategy: Strategy, server_round: int, arrays: ArrayRecord) -> list[Message]:
        messages = strategy.configure_evaluate(server_round, arrays, ConfigRecord(), self.grid())
        return sorted(messages, key=lambda m: m.metadata.dst_node_id)

    # -- a site's answers, like client_app.app.train and .evaluate ---------------------
    def train_reply(self, message: Message, target: Mapping[str, torch.Tensor] | None = None) -> Message:
        """Local training through the plugin's hooks; with ``target`` the site's model is set to it instead."""
        site = self.site(message.metadata.dst_node_id)
        content = _wire(message.content)
        config = content[CONFIG_KEY]
        hooks = client_hooks_for(config, site.state, self.registry)
        model = TinySegmenter()
        hooks.load_global(model, content)
        metrics: dict[str, float | int] = {}
        if config.get(REPORT_LOSS_BEFORE_KEY, False):
            with torch.no_grad():
                metrics[LOSS_BEFORE_KEY] = float(_loss(model, site.inputs, site.targets))
        started = time.perf_counter()
        lr = float(config.get(LEARNING_RATE_KEY, LEARNING_RATE))
        if target is None:
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            for _ in range(LOCAL_STEPS):
                optimizer.zero_grad(set_to_none=True)
                loss = _loss(model, site.inputs, site.targets)
                if (extra := hooks.extra_loss(model)) is not None:
                    loss = loss + extra
                loss.backward()
                hooks.before_optimizer_step(model)
                optimizer.step()
        else:
            model.load_state_dict(target)
        with torch.no_grad():
            metrics[LOSS_KEY] = float(_loss(model, site.inputs, site.targets))
        metrics[NUM_EXAMPLES_KEY] = site.num_examples
        metrics[NUM_PATCHES_KEY] = LOCAL_STEPS * site.inputs.shape[0]
        metrics[TRAIN_SECONDS_KEY] = time.perf_counter() - started
        reply = RecordDict(
            {
                ARRAYS_KEY: hooks.reply_arrays(model, LOCAL_STEPS, lr),
                METRICS_KEY: MetricRecord(metrics),
                SITE_RECORD_KEY: ConfigRecord({SITE_ID_KEY: site.site_id}),
            }
        )
        site.state = _wire(site.state)  # the node's state as its next message finds it
        return Message(_wire(reply), reply_to=message)

    def evaluate_reply(self, message: Message) -> Message:
        """The hooks load the global model, the site reports its loss."""
        site = self.site(message.metadata.dst_node_id)
        content = _wire(message.content)
        hooks = client_hooks_for(content[CONFIG_KEY], site.state, self.registry)
        model = TinySegmenter()
        hooks.load_global(model, content)
        with torch.no_grad():
            loss = float(_loss(model, site.inputs, site.targets))
        site.state = _wire(site.state)
        reply = RecordDict(
            {
                METRICS_KEY: MetricRecord({NUM_EXAMPLES_KEY: site.num_examples, LOSS_KEY: loss}),
                SITE_RECORD_KEY: ConfigRecord({SITE_ID_KEY: site.site_id}),
            }
        )
        return Message(_wire(reply), reply_to=message)

    # -- round 1 of fresh strategies -----------------------------------------------------
    def trained_replies(self) -> tuple[list[Message], list[Message]]:
        """Round 1 of a fresh strategy on fresh sites: its train messages and each site's (distinct) reply."""
        self.reset()
        if "trained" not in self.round_1:
            strategy, _ = self.strategy()
            messages = self.configure_train(strategy, 1, self.global_arrays)
            replies = [self.train_reply(m) for m in messages]
            self.round_1["trained"] = (messages, replies, [_wire(site.state) for site in self.sites])
        messages, replies, states = copy.deepcopy(self.round_1["trained"])
        for site, state in zip(self.sites, states):
            site.state = state
        return messages, replies

    def aggregate(self, replies: list[Message]) -> tuple[ArrayRecord | None, MetricRecord | None, list[SiteReply]]:
        """Round 1 of another fresh strategy, aggregating ``replies``: (arrays, metrics, the replies it recorded)."""
        strategy, ledger = self.strategy()
        self.configure_train(strategy, 1, self.global_arrays)
        # Each aggregation reads its own copies, as off the wire (Flower's FedMedian pops arrays out of replies).
        arrays, metrics = strategy.aggregate_train(1, [copy.deepcopy(r) for r in replies])
        return arrays, metrics, list(ledger.all_replies())

    def mixin_hint(self) -> str:
        if isinstance(self.strategy()[0], FedTumorStrategy):
            return ""
        return " (the strategy is not a FedTumorStrategy: put FedTumorStrategy first in its bases)"


def site_reply(node_id: int, content: RecordDict, message_type: str = MessageType.TRAIN) -> Message:
    """A reply from ``node_id`` as the server receives it, for tests and benchmarks of strategies."""
    metadata = Metadata(
        run_id=1,
        message_id=f"reply-{node_id}",
        src_node_id=node_id,
        dst_node_id=SUPERLINK_NODE_ID,
        reply_to_message_id=f"instruction-{node_id}",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(metadata=metadata, content=content)


def site_instruction(
    node_id: int, content: RecordDict, message_type: str = MessageType.TRAIN, group_id: str = "1"
) -> Message:
    """A message from the server to ``node_id`` as its ClientApp receives it, for tests of ClientApp code."""
    metadata = Metadata(
        run_id=1,
        message_id=f"instruction-{node_id}",
        src_node_id=SUPERLINK_NODE_ID,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id=group_id,
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(metadata=metadata, content=content)


@contextlib.contextmanager
def as_serverapp() -> Iterator[None]:
    """Play a ServerApp's task identity, which Flower stamps on every Message it creates.

    Outside a running ServerApp, ``Message(content, dst_node_id=..., message_type=...)`` raises
    ``TaskIdentity.run_id is not set``; tests that build messages by hand run inside this.
    """
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    if TaskIdentity._run_id is None:
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


# ------------------------------------------------------------------ the kit's process state
@contextlib.contextmanager
def quiet_flower() -> Iterator[None]:
    """Flower logs every configure/aggregate call; the kit's table is the report."""
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.ERROR)
    try:
        yield
    finally:
        FLOWER_LOGGER.setLevel(level)


@contextlib.contextmanager
def one_thread_own_rng() -> Iterator[None]:
    """Tiny tensors: threads only add contention. Python's and torch's random state are restored after."""
    threads, python_state = torch.get_num_threads(), random.getstate()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(python_state)
