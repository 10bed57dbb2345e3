"""Conformance kit: does a strategy plugin keep the contract fedtumor's federations rely on?

The kit drives the plugin's Flower strategy by hand, the way ``Strategy.start`` does
(``configure_train`` -> sites -> ``aggregate_train``), against a fake grid of five nodes and
simulated sites in this process: no SuperLink, no Ray. Each simulated site mirrors the
ClientApp: it applies the plugin's client hooks (``client_hooks_for`` on the round config,
with a per-node state that persists across rounds) to a tiny 3D model, Conv3d(4->3) +
InstanceNorm3d(affine=True), takes a few real Adam steps on its own random patches and
replies with ``num-examples``, ``loss``, ``num-patches``, ``train-seconds`` (``loss-before``
when the round config asks for it) and the ``site`` ConfigRecord. Everything crossing the
"network" (messages both ways, and node state between rounds) is serialised and read back,
as it is between real processes.

Use it from the command line (``fedtumor strategies check NAME``) or in a plugin's own tests::

    from fedtumor.federation.conformance import assert_conforms

    def test_my_plugin_conforms():
        assert_conforms(MyPlugin)

Each check is a small function of a :class:`Harness` returning an :class:`Outcome`; an
exception inside a check is a failure whose reason names it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.logger import FLOWER_LOGGER
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore.task_identity import TaskIdentity
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedtumor.core.config import RunConfig
from fedtumor.federation.plugin import StrategyPlugin
from fedtumor.federation.registry import Registry, build_strategy, client_hooks_for, load_registry
from fedtumor.federation.replies import SiteReply
from fedtumor.federation.strategy import FedTumorStrategy
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CLIENT_HOOK_KEY,
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

PASS, FAIL, SKIP = "pass", "fail", "skip"
NUM_NODES = 5
NUM_ROUNDS = 3
LOCAL_STEPS = 3
LEARNING_RATE = 0.01
FAILED_CODE = 100  # the ClientApp's code for a site that could not train
RTOL, ATOL = 1e-5, 1e-6  # float32 sums in another order differ in the last bits


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


def _numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in arrays.items()}


@dataclass
class Harness:
    """A plugin, the registry its client hooks are looked up in, and helpers to run rounds."""

    plugin: type[StrategyPlugin]
    registry: Registry
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

    def strategy(self) -> tuple[Strategy, list[SiteReply]]:
        """A fresh strategy, built the way the ServerApp builds it, and the replies its listener is told of."""
        # min-train-replies 1: the checks aggregate chosen subsets of replies; the run's minimum is not under test.
        config = RunConfig(
            strategy=self.plugin.name, learning_rate=LEARNING_RATE, min_available_nodes=2, min_train_replies=1
        )
        strategy = build_strategy(config, self.registry)
        events: list[SiteReply] = []
        strategy.reply_listener = events.append
        return strategy, events

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
        """Round 1 of another fresh strategy, aggregating ``replies`` (answers to the same round-1 config)."""
        strategy, events = self.strategy()
        self.configure_train(strategy, 1, self.global_arrays)
        # Each aggregation reads its own copies, as off the wire (Flower's FedMedian pops arrays out of replies).
        arrays, metrics = strategy.aggregate_train(1, [copy.deepcopy(r) for r in replies])
        return arrays, metrics, events

    def mixin_hint(self) -> str:
        if isinstance(self.strategy()[0], FedTumorStrategy):
            return ""
        return " (the strategy is not a FedTumorStrategy: put FedTumorStrategy first in its bases)"


# ------------------------------------------------------------------ comparing results
def _differences(a: ArrayRecord, b: ArrayRecord) -> list[str]:
    """Keys on which two aggregates differ beyond float tolerance (or exist in only one)."""
    a_np, b_np = _numpy(a), _numpy(b)
    problems = [f"{key!r} only in one" for key in sorted(set(a_np) ^ set(b_np))]
    for key in sorted(set(a_np) & set(b_np)):
        if a_np[key].shape != b_np[key].shape:
            problems.append(f"{key!r} shape {a_np[key].shape} vs {b_np[key].shape}")
        elif not np.allclose(a_np[key], b_np[key], rtol=RTOL, atol=ATOL, equal_nan=True):
            gap = float(np.max(np.abs(a_np[key].astype(np.float64) - b_np[key].astype(np.float64))))
            problems.append(f"{key!r} differs by up to {gap:.3g}")
    return problems


def _metric_differences(a: MetricRecord | None, b: MetricRecord | None) -> list[str]:
    a, b = dict(a or {}), dict(b or {})
    problems = [f"{key!r} only in one" for key in sorted(set(a) ^ set(b))]
    for key in sorted(set(a) & set(b)):
        if not np.allclose(np.asarray(a[key], float), np.asarray(b[key], float), rtol=RTOL, atol=ATOL):
            problems.append(f"{key!r}: {a[key]} vs {b[key]}")
    return problems


def _layout_problems(aggregate: ArrayRecord, sent: ArrayRecord) -> list[str]:
    """Why ``aggregate`` could not be the next global model: missing, extra, reshaped or retyped arrays."""
    problems = [f"missing {key!r}" for key in sent if key not in aggregate]
    problems += [f"extra {key!r}" for key in aggregate if key not in sent]
    for key in sent:
        if key in aggregate:
            got, expected = aggregate[key], sent[key]
            if tuple(got.shape) != tuple(expected.shape):
                problems.append(f"{key!r} has shape {tuple(got.shape)}, the model {tuple(expected.shape)}")
            if got.dtype != expected.dtype:
                problems.append(f"{key!r} has dtype {got.dtype}, the model {expected.dtype}")
    return problems


def _first(problems: list[str], limit: int = 3) -> str:
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


@dataclass(frozen=True)
class Outcome:
    status: str  # PASS, FAIL or SKIP
    reason: str


def _pass(reason: str) -> Outcome:
    return Outcome(PASS, reason)


def _fail(reason: str) -> Outcome:
    return Outcome(FAIL, reason)


# ------------------------------------------------------------------ the checks
def check_identical_updates(h: Harness) -> Outcome:
    """Every site sends the same model: the aggregate is that model (where the plugin promises it)."""
    if not h.plugin.preserves_identical_updates:
        return Outcome(SKIP, "the plugin declares preserves_identical_updates = False")
    messages, replies = h.trained_replies()
    if not replies:
        return _fail("round 1 trained no site")
    # The update every site sends: the global model after a few steps on site 1's patches.
    target = initial_model()
    target.load_state_dict(replies[0].content[ARRAYS_KEY].to_torch_state_dict(), strict=False)
    h.reset()  # fresh node state, so the hooks treat every site alike
    replies = [h.train_reply(m, target.state_dict()) for m in messages]
    sent = [_numpy(r.content[ARRAYS_KEY]) for r in replies]
    shared = [key for key in sent[0] if key in h.global_arrays]
    if any(not np.array_equal(s[key], sent[0][key]) for s in sent[1:] for key in shared):
        return _fail("the client hooks turned one model into different replies")
    aggregate, _, _ = h.aggregate(replies)
    if aggregate is None:
        return _fail("aggregate_train returned no arrays")
    problems = [f"missing {key!r}" for key in shared if key not in aggregate]
    problems += _differences(
        ArrayRecord({k: aggregate[k] for k in shared if k in aggregate}),
        ArrayRecord({k: replies[0].content[ARRAYS_KEY][k] for k in shared if k in aggregate}),
    )
    if problems:
        return _fail(f"{len(replies)} identical updates aggregate to something else: {_first(problems)}")
    return _pass(f"{len(replies)} identical updates aggregate to that update ({len(shared)} arrays)")


def check_reply_order(h: Harness) -> Outcome:
    """The same replies in another order give the same model and metrics."""
    _, replies = h.trained_replies()
    if len(replies) < 3:
        return Outcome(SKIP, f"round 1 trains {len(replies)} of {NUM_NODES} sites; the check needs 3")
    forward, forward_metrics, _ = h.aggregate(replies)
    for label, order in {"reversed": replies[::-1], "rotated": replies[2:] + replies[:2]}.items():
        other, other_metrics, _ = h.aggregate(order)
        if (forward is None) != (other is None):
            return _fail(f"{label} order: aggregate_train returned arrays for one order only")
        if forward is not None and (problems := _differences(forward, other)):
            return _fail(f"{label} order changes the model: {_first(problems)}")
        if problems := _metric_differences(forward_metrics, other_metrics):
            return _fail(f"{label} order changes the metrics: {_first(problems)}")
    return _pass(f"{len(replies)} distinct replies in 3 orders give the same model and metrics")


def check_dtypes_and_shapes(h: Harness) -> Outcome:
    """The aggregate has exactly the global model's arrays, shapes and dtypes: it is the next global model."""
    _, replies = h.trained_replies()
    aggregate, _, _ = h.aggregate(replies)
    if aggregate is None:
        return _fail("aggregate_train returned no arrays")
    if problems := _layout_problems(aggregate, h.global_arrays):
        return _fail(f"the aggregate is not laid out like the model sent: {_first(problems)}")
    dtypes = ", ".join(sorted({str(a.dtype) for a in aggregate.values()}))
    return _pass(f"{len(aggregate)} arrays keep their keys, shapes and dtypes ({dtypes})")


def _corrupt_non_finite(arrays: ArrayRecord, key: str) -> ArrayRecord:
    values = arrays[key].numpy().copy()
    values.reshape(-1)[0] = np.nan
    values.reshape(-1)[-1] = np.inf
    return ArrayRecord({**dict(arrays.items()), key: Array(values)})


def _corrupt_shape(arrays: ArrayRecord, key: str) -> ArrayRecord:
    values = arrays[key].numpy()
    return ArrayRecord({**dict(arrays.items()), key: Array(np.zeros((*values.shape, 2), dtype=values.dtype))})


def _check_rejection(h: Harness, corrupt: Callable[[ArrayRecord, str], ArrayRecord], what: str) -> Outcome:
    """One site's reply is corrupted: the aggregate must equal the one without it, the listener told why."""
    messages, replies = h.trained_replies()
    if len(replies) < 3:
        return Outcome(SKIP, f"round 1 trains {len(replies)} of {NUM_NODES} sites; the check needs 3")
    arrays = replies[-1].content[ARRAYS_KEY]
    key = next((k for k in arrays if k in h.global_arrays), None)
    if key is None:
        return _fail("the site's reply holds none of the global model's arrays")
    content = RecordDict(dict(replies[-1].content.items()))
    content[ARRAYS_KEY] = corrupt(arrays, key)
    bad = Message(content, reply_to=messages[-1])
    good = replies[:-1]
    try:
        with_bad, _, events = h.aggregate([*good[:1], bad, *good[1:]])  # not first, not last
    except Exception as exc:
        return _fail(f"aggregating a reply with {what} raised {type(exc).__name__}: {exc}{h.mixin_hint()}")
    without_bad, _, _ = h.aggregate(good)
    node = bad.metadata.src_node_id
    rejected = [e.error for e in events if e.node_id == node and e.error and e.error.startswith("rejected:")]
    if with_bad is None or without_bad is None:
        return _fail("aggregate_train returned no arrays for the sound replies")
    if problems := _differences(with_bad, without_bad):
        return _fail(f"a reply with {what} changed the aggregate: {_first(problems)}{h.mixin_hint()}")
    if not rejected:
        return _fail(f"the reply listener was not told 'rejected: ...' of the reply with {what}{h.mixin_hint()}")
    return _pass(f"reply with {what} in {key!r} left out; listener told {rejected[0]!r}")


def check_rejects_non_finite(h: Harness) -> Outcome:
    """A reply holding NaN and Inf is left out (the aggregate is as without it) and reported as rejected."""
    return _check_rejection(h, _corrupt_non_finite, "NaN and Inf")


def check_rejects_wrong_shape(h: Harness) -> Outcome:
    """A reply with an array of another shape is left out and reported as rejected."""
    return _check_rejection(h, _corrupt_shape, "a wrong shape")


def check_failed_client(h: Harness) -> Outcome:
    """A site replying with an error does not stop the round: the others are aggregated, the error reported."""
    messages, replies = h.trained_replies()
    if len(replies) < 3:
        return Outcome(SKIP, f"round 1 trains {len(replies)} of {NUM_NODES} sites; the check needs 3")
    reason = "site 5: subject S5: S5_flair.nii.gz: truncated file (simulated)"
    failed = Message(Error(code=FAILED_CODE, reason=reason), reply_to=messages[-1])
    with_failure, _, events = h.aggregate([*replies[:-1], failed])
    without, _, _ = h.aggregate(replies[:-1])
    if with_failure is None:
        return _fail(f"no model from the round where {len(replies) - 1} of {len(replies)} sites replied")
    if problems := _differences(with_failure, without):
        return _fail(f"the failed site changed the aggregate: {_first(problems)}")
    if not any(e.node_id == failed.metadata.src_node_id and e.error == reason for e in events):
        return _fail(f"the reply listener was not told of the failed site's error{h.mixin_hint()}")
    strategy, _ = h.strategy()  # federated evaluation goes on without it too
    evaluate = h.configure_evaluate(strategy, 1, with_failure)
    if len(evaluate) >= 2:
        eval_replies = [h.evaluate_reply(m) for m in evaluate[:-1]]
        eval_replies.append(Message(Error(code=FAILED_CODE, reason=reason), reply_to=evaluate[-1]))
        if strategy.aggregate_evaluate(1, eval_replies) is None:
            return _fail("aggregate_evaluate returned nothing when one site failed")
    return _pass(f"{len(replies) - 1} of {len(replies)} sites aggregated in train and evaluate; error reported")


def _hook_config_problem(h: Harness, server_round: int, phase: str, messages: list[Message]) -> str | None:
    """Why sites would not run the plugin's hooks on these messages, or None."""
    hooks_class = h.plugin.client_hooks
    if hooks_class is None:
        return None
    for message in messages:
        config = message.content[CONFIG_KEY]
        if config.get(CLIENT_HOOK_KEY) != h.plugin.name:
            return (
                f"round {server_round}: {phase} config has {CLIENT_HOOK_KEY}={config.get(CLIENT_HOOK_KEY)!r}, "
                f"not {h.plugin.name!r}: sites would not run the plugin's hooks"
            )
        hooks = client_hooks_for(config, RecordDict(), h.registry)
        if not isinstance(hooks, hooks_class):
            return f"round {server_round}: sites get {type(hooks).__name__}, not {hooks_class.__name__}"
    return None


def check_rounds_and_state(h: Harness) -> Outcome:
    """Three rounds of configure -> hooks on the sites -> aggregate: the model moves, node state lasts."""
    h.reset()
    strategy, events = h.strategy()
    arrays = h.global_arrays
    kept: dict[int, set[str]] = {}  # node -> state records after round 1
    asked_loss_before = False
    for server_round in range(1, NUM_ROUNDS + 1):
        messages = h.configure_train(strategy, server_round, arrays)
        if not messages:
            return _fail(f"round {server_round}: configure_train sent no messages")
        if problem := _hook_config_problem(h, server_round, "train", messages):
            return _fail(problem)
        asked_loss_before |= any(m.content[CONFIG_KEY].get(REPORT_LOSS_BEFORE_KEY, False) for m in messages)
        if server_round == NUM_ROUNDS:
            lost = {h.site(n).site_id: sorted(keys - set(h.site(n).state)) for n, keys in kept.items()}
            if any(lost.values()):
                return _fail(f"node state from round 1 gone by round {server_round}: {lost}")
        try:
            replies = [h.train_reply(m) for m in messages]
        except Exception as exc:
            return _fail(f"round {server_round}: a site failed on the train message: {type(exc).__name__}: {exc}")
        if server_round == 1:
            kept = {site.node_id: set(site.state) for site in h.sites if len(site.state)}
        new_arrays, _ = strategy.aggregate_train(server_round, replies)
        if rejected := [e.error for e in events if e.server_round == server_round and e.error]:
            return _fail(f"round {server_round}: the strategy rejected its own sites' replies: {rejected[0]}")
        if new_arrays is None:
            return _fail(f"round {server_round}: aggregate_train returned no arrays")
        if problems := _layout_problems(new_arrays, arrays):
            return _fail(f"round {server_round}: the new global model is laid out differently: {_first(problems)}")
        before, after = _numpy(arrays), _numpy(new_arrays)
        if all(np.array_equal(before[key], after[key]) for key in before):
            return _fail(f"round {server_round}: the global model did not change")
        arrays = new_arrays
        evaluate = h.configure_evaluate(strategy, server_round, arrays)
        if problem := _hook_config_problem(h, server_round, "evaluate", evaluate):
            return _fail(problem)
        try:
            eval_replies = [h.evaluate_reply(m) for m in evaluate]
        except Exception as exc:
            return _fail(f"round {server_round}: a site failed on the evaluate message: {type(exc).__name__}: {exc}")
        if evaluate and strategy.aggregate_evaluate(server_round, eval_replies) is None:
            return _fail(f"round {server_round}: aggregate_evaluate returned nothing")
    notes = [f"{NUM_ROUNDS} rounds of train and evaluate, the model moved each round"]
    if h.plugin.client_hooks is not None:
        notes.append(f"{h.plugin.client_hooks.__name__} ran on every site")
    if asked_loss_before:
        notes.append("sites reported loss-before as asked")
    if kept:
        notes.append(f"node state {sorted(set().union(*kept.values()))} kept from round 1 to {NUM_ROUNDS}")
    else:
        notes.append("no node state used")
    return _pass("; ".join(notes))


CHECKS: dict[str, Callable[[Harness], Outcome]] = {
    "identical updates": check_identical_updates,
    "reply order": check_reply_order,
    "dtypes and shapes": check_dtypes_and_shapes,
    "rejects NaN/Inf": check_rejects_non_finite,
    "rejects wrong shape": check_rejects_wrong_shape,
    "failed client": check_failed_client,
    "rounds and state": check_rounds_and_state,
}


# ------------------------------------------------------------------ running the kit
@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    reason: str
    seconds: float


@contextlib.contextmanager
def _quiet_flower() -> Iterator[None]:
    """Flower logs every configure/aggregate call; the kit's table is the report."""
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.ERROR)
    try:
        yield
    finally:
        FLOWER_LOGGER.setLevel(level)


@contextlib.contextmanager
def _one_thread_own_rng() -> Iterator[None]:
    """Tiny tensors: threads only add contention. Python's and torch's random state are restored after."""
    threads, python_state = torch.get_num_threads(), random.getstate()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(python_state)


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


def run_checks(plugin: type[StrategyPlugin], registry: Registry | None = None) -> list[CheckResult]:
    """Every check on ``plugin``; ``registry`` is where its client hooks are found (default: just the plugin)."""
    registry = registry or Registry(plugins={plugin.name: plugin})
    results = []
    round_1: dict[str, tuple] = {}
    with _quiet_flower(), as_serverapp(), _one_thread_own_rng():
        for name, check in CHECKS.items():
            started = time.perf_counter()
            try:
                outcome = check(Harness(plugin, registry, round_1=round_1))
            except Exception as exc:  # a crash is a failure with its reason
                outcome = _fail(f"raised {type(exc).__name__}: {exc}")
            results.append(CheckResult(name, outcome.status, outcome.reason, time.perf_counter() - started))
    return results


def print_results(plugin: type[StrategyPlugin], results: list[CheckResult], console: Console) -> None:
    table = Table(title=f"conformance of strategy {plugin.name!r}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("reason")
    style = {PASS: "green", FAIL: "bold red", SKIP: "yellow"}
    for result in results:
        table.add_row(result.name, f"[{style[result.status]}]{result.status}[/]", escape(result.reason))
    console.print(table)
    failed = [r.name for r in results if r.status == FAIL]
    verdict = f"[bold red]FAILED[/]: {escape(', '.join(failed))}" if failed else "[green]conforms[/]"
    console.print(f"{escape(plugin.name)}: {verdict}")


def run_kit(name: str, console: Console) -> bool:
    """Check the installed plugin ``name``; print a table; True iff no check failed (skips are fine).

    An unknown or broken plugin raises :class:`fedtumor.core.errors.ConfigError` (from ``Registry.get``).
    """
    registry = load_registry()
    plugin = registry.get(name)
    results = run_checks(plugin, registry)
    print_results(plugin, results, console)
    return all(r.status != FAIL for r in results)


def assert_conforms(plugin: type[StrategyPlugin]) -> None:
    """For a plugin's own tests: raise AssertionError listing every failed check and its reason."""
    results = run_checks(plugin)
    failed = [f"{r.name}: {r.reason}" for r in results if r.status == FAIL]
    if failed:
        raise AssertionError(f"strategy plugin {plugin.name!r} fails the conformance kit:\n  " + "\n  ".join(failed))
