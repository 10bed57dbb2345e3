"""FeTS Task 1 hooks: choose each round's collaborators and set each round's hyperparameters.

FeTS Challenge Task 1 let an author supply, besides the aggregation, two functions called
before every round: which collaborators train, and with which learning rate and number of
local epochs. fedtumor offers the same two hooks to any strategy plugin.

**Collaborator selection** (:class:`CollaboratorSelector`)::

    def select(server_round: int, sites: list[SiteInfo], rng: numpy.random.Generator) -> list[int]

``sites`` describes the nodes Flower sampled for this round (all connected nodes with
``fraction-train = 1``), in a stable order: sites already heard from by site id (natural
order: site-2 before site-10), then the ones never heard from by node id. The function returns
the node ids that train this round: a non-empty subset of ``[s.node_id for s in sites]``.
``rng`` is seeded from the run config's ``seed`` and the round, so a random choice repeats
from run to run once the sites have replied. (Before its first reply a site is known only by
its Flower node id, which a simulation draws anew each run, so a random choice in round 1 is
repeatable only as a function of node ids.) Built-ins: :func:`all_sites` (the default),
:func:`random_fraction`, :func:`largest_first`, :func:`fastest_first`.

**Round hyperparameters** (:class:`RoundHyperparameters`)::

    def hyperparameters(server_round: int, history: TrainingHistory) -> {"learning-rate": float, "local-epochs": int}

``history`` holds the run config's values (``history.defaults``), the completed rounds
(:class:`RoundRecord`: who was selected, with which hyperparameters, each site's training and
validation metrics, simulated durations) and what is known of every site. Either key may be
left out to keep the run config's value. The result goes into the round's train config, from
which the ClientApp reads ``learning-rate`` and ``local-epochs``. Built-ins: :func:`constant`
(the default: the run config's values) and :func:`step_decay`.

**How a plugin supplies them**: class attributes of its ``StrategyPlugin``::

    class MyPlugin(FlowerStrategyPlugin):
        select_collaborators = staticmethod(my_selector)        # a plain function needs staticmethod
        round_hyperparameters = step_decay(factor=0.5, every=5)  # built-in factories return objects

**From the run config, without code**: ``collaborator-selection`` and ``round-hyperparameters``
name a built-in with its parameters, e.g. ``"random-fraction fraction=0.5"`` or
``"step-decay factor=0.5 every=10"``; empty (the default) keeps the plugin's choice.

**What the server learns** (:class:`SiteInfo`): the strategy mixin (``fedtumor/federation/strategy.py``)
updates a site's record from every reply it sees: site id (None until the site first
replies), training subjects, last training loss, patches processed, failures, federated
validation metrics and, when the server has site profiles (``fedtumor/federation/simulated_time.py``),
the site's profile and the simulated duration of its last training round.

This module imports neither Flower nor torch.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fedtumor.core.ordering import natural_key
from fedtumor.federation.simulated_time import SiteProfile, SiteProfiles
from fedtumor.federation.wire import (
    LEARNING_RATE_KEY,
    LOCAL_EPOCHS_KEY,
    LOSS_BEFORE_KEY,
    LOSS_KEY,
    NUM_EXAMPLES_KEY,
    NUM_PATCHES_KEY,
    TRAIN_SECONDS_KEY,
)

if TYPE_CHECKING:
    from fedtumor.federation.replies import SiteReply

HYPERPARAMETER_KEYS = (LEARNING_RATE_KEY, LOCAL_EPOCHS_KEY)


# ----------------------------------------------------------------------------- what is known


@dataclass(frozen=True)
class SiteInfo:
    """What the server has learned about one node from its replies (None: not yet known)."""

    node_id: int
    site_id: str | None = None
    num_examples: int | None = None  # training subjects
    num_val_examples: int | None = None  # validation subjects (federated validation)
    loss: float | None = None  # mean training loss of the last local epoch of its last training
    loss_before: float | None = None  # loss of the received global model, when the site reports it
    num_patches: int | None = None  # patches processed in its last training (all local epochs)
    train_seconds: float | None = None  # real seconds its last training took
    last_trained_round: int | None = None
    rounds_trained: int = 0
    rounds_selected: int = 0
    failures: int = 0
    last_error: str | None = None
    train_metrics: Mapping[str, float] = field(default_factory=dict)  # its last training reply
    val_metrics: Mapping[str, float] = field(default_factory=dict)  # its last validation reply
    profile: SiteProfile | None = None  # simulated hardware, when the server has profiles
    simulated_s: float | None = None  # simulated duration of its last training round


@dataclass(frozen=True)
class RoundRecord:
    """One round as the strategy configured it and the replies it got (keyed by node id)."""

    server_round: int
    offered: tuple[int, ...]  # node ids the selector chose from
    selected: tuple[int, ...]
    hyperparameters: Mapping[str, float | int]
    train: dict[int, Mapping[str, float]] = field(default_factory=dict)
    evaluate: dict[int, Mapping[str, float]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    simulated_s: dict[int, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        """Simulated duration: its slowest site, None without site profiles."""
        return max(self.simulated_s.values()) if self.simulated_s else None

    def mean_train_loss(self) -> float | None:
        """Training loss averaged over the sites, weighted by training subjects."""
        pairs = [(m[LOSS_KEY], m.get(NUM_EXAMPLES_KEY, 1.0)) for m in self.train.values() if "loss" in m]
        total = sum(weight for _, weight in pairs)
        return sum(loss * weight for loss, weight in pairs) / total if total > 0 else None


@dataclass(frozen=True)
class TrainingHistory:
    """What a hyperparameter schedule sees: run-config defaults, completed rounds, the sites."""

    defaults: Mapping[str, float | int]
    rounds: tuple[RoundRecord, ...] = ()
    sites: tuple[SiteInfo, ...] = ()

    @property
    def last(self) -> RoundRecord | None:
        return self.rounds[-1] if self.rounds else None


# ----------------------------------------------------------------------------- the protocols


class CollaboratorSelector(Protocol):
    def __call__(self, server_round: int, sites: list[SiteInfo], rng: np.random.Generator) -> list[int]: ...


class RoundHyperparameters(Protocol):
    def __call__(self, server_round: int, history: TrainingHistory) -> Mapping[str, float | int]: ...


# ----------------------------------------------------------------------------- built-in selectors


def all_sites(server_round: int, sites: list[SiteInfo], rng: np.random.Generator) -> list[int]:
    """Every sampled site trains (the default)."""
    return [site.node_id for site in sites]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class random_fraction:  # noqa: N801 - used like a function: random_fraction(0.5)
    """A uniformly random ``fraction`` of the sites each round (at least ``minimum``)."""

    fraction: float
    minimum: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.fraction, (int, float)) and 0.0 < self.fraction <= 1.0):
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")
        _positive_int("minimum", self.minimum)

    def __call__(self, server_round: int, sites: list[SiteInfo], rng: np.random.Generator) -> list[int]:
        count = min(len(sites), max(self.minimum, int(self.fraction * len(sites))))
        picked = rng.choice(len(sites), size=count, replace=False)
        return [sites[i].node_id for i in sorted(picked)]


@dataclass(frozen=True)
class largest_first:  # noqa: N801
    """The ``k`` sites with the most training subjects; sites not yet heard from come first."""

    k: int

    def __post_init__(self) -> None:
        _positive_int("k", self.k)

    def __call__(self, server_round: int, sites: list[SiteInfo], rng: np.random.Generator) -> list[int]:
        order = sorted(
            range(len(sites)),
            key=lambda i: (sites[i].num_examples is not None, -(sites[i].num_examples or 0), i),
        )
        return [sites[i].node_id for i in order[: self.k]]


@dataclass(frozen=True)
class fastest_first:  # noqa: N801
    """The ``k`` sites whose last training round was shortest in simulated time; unknown first."""

    k: int

    def __post_init__(self) -> None:
        _positive_int("k", self.k)

    def __call__(self, server_round: int, sites: list[SiteInfo], rng: np.random.Generator) -> list[int]:
        order = sorted(
            range(len(sites)),
            key=lambda i: (sites[i].simulated_s is not None, sites[i].simulated_s or 0.0, i),
        )
        return [sites[i].node_id for i in order[: self.k]]


# ----------------------------------------------------------------------------- built-in schedules


def constant(server_round: int, history: TrainingHistory) -> dict[str, float | int]:
    """The run config's ``learning-rate`` and ``local-epochs`` every round (the default)."""
    return dict(history.defaults)


@dataclass(frozen=True)
class step_decay:  # noqa: N801
    """Learning rate x ``factor`` every ``every`` rounds: lr_r = lr * factor ** ((r - 1) // every)."""

    factor: float = 0.5
    every: int = 10

    def __post_init__(self) -> None:
        if not (isinstance(self.factor, (int, float)) and 0.0 < self.factor <= 1.0):
            raise ValueError(f"factor must be in (0, 1], got {self.factor!r}")
        _positive_int("every", self.every)

    def __call__(self, server_round: int, history: TrainingHistory) -> dict[str, float | int]:
        if LEARNING_RATE_KEY not in history.defaults:
            raise ValueError("step_decay needs the run config's learning-rate in the train config")
        values = dict(history.defaults)
        values[LEARNING_RATE_KEY] = float(history.defaults[LEARNING_RATE_KEY]) * self.factor ** (
            (server_round - 1) // self.every
        )
        return values


# ----------------------------------------------------------------------------- from the run config

# name -> (factory, default parameters); the defaults also fix each parameter's type.
SELECTORS: dict[str, tuple[Callable[..., CollaboratorSelector], dict[str, Any]]] = {
    "all-sites": (lambda: all_sites, {}),
    "random-fraction": (random_fraction, {"fraction": 0.5, "minimum": 1}),
    "largest-first": (largest_first, {"k": 2}),
    "fastest-first": (fastest_first, {"k": 2}),
}
SCHEDULES: dict[str, tuple[Callable[..., RoundHyperparameters], dict[str, Any]]] = {
    "constant": (lambda: constant, {}),
    "step-decay": (step_decay, {"factor": 0.5, "every": 10}),
}


def _from_spec(text: str, table: Mapping[str, tuple[Callable[..., Any], dict[str, Any]]]) -> Any:
    """``"name key=value ..."`` (TOML values) -> the built-in; ValueError saying what is wrong."""
    name, *pairs = text.split()
    if name not in table:
        raise ValueError(f"{name!r} is not one of {', '.join(table)}")
    factory, defaults = table[name]
    params = dict(defaults)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in defaults:
            known = ", ".join(defaults) or "none"
            raise ValueError(f"{pair!r} is not a parameter of {name} (parameters: {known}; write key=value)")
        try:
            value = tomllib.loads(f"value = {raw}")["value"]
        except tomllib.TOMLDecodeError:
            raise ValueError(f"{name}: cannot parse the value of {key!r}: {raw!r}") from None
        expected = type(defaults[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ValueError(f"{name}: {key!r} expects {expected.__name__}, got {value!r}")
        params[key] = value
    try:
        return factory(**{key.replace("-", "_"): value for key, value in params.items()})
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def selector_from_spec(text: str) -> CollaboratorSelector | None:
    """Run-config ``collaborator-selection``; None for "" (keep the plugin's)."""
    return _from_spec(text, SELECTORS) if text.strip() else None


def hyperparameters_from_spec(text: str) -> RoundHyperparameters | None:
    """Run-config ``round-hyperparameters``; None for "" (keep the plugin's)."""
    return _from_spec(text, SCHEDULES) if text.strip() else None


# ----------------------------------------------------------------------------- checks


def _name(function: Any) -> str:
    return getattr(function, "__qualname__", None) or type(function).__name__


def checked_selection(chosen: Any, offered: list[int], server_round: int, selector: Any) -> list[int]:
    """The selector's answer, validated: a non-empty subset of the offered node ids, no repeats."""
    where = f"round {server_round}: collaborator selector {_name(selector)}"
    try:
        chosen = [int(node_id) for node_id in chosen]
    except (TypeError, ValueError):
        raise ValueError(f"{where} must return a list of node ids, got {chosen!r}") from None
    unknown = sorted(set(chosen) - set(offered))
    if unknown:
        raise ValueError(f"{where} chose node ids that were not offered: {unknown}")
    if not chosen:
        raise ValueError(f"{where} chose no site; every round needs at least one")
    return list(dict.fromkeys(chosen))


def checked_hyperparameters(values: Any, server_round: int, schedule: Any) -> dict[str, float | int]:
    """The schedule's answer, validated: only known keys, lr > 0 and finite, epochs an int >= 1."""
    where = f"round {server_round}: round hyperparameters {_name(schedule)}"
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must return a mapping, got {values!r}")
    extra = sorted(set(values) - set(HYPERPARAMETER_KEYS))
    if extra:
        raise ValueError(f"{where} returned unknown keys {extra}; allowed: {', '.join(HYPERPARAMETER_KEYS)}")
    out: dict[str, float | int] = {}
    if LEARNING_RATE_KEY in values:
        lr = values[LEARNING_RATE_KEY]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"{where}: learning-rate must be a positive number, got {lr!r}")
        out[LEARNING_RATE_KEY] = float(lr)
    if LOCAL_EPOCHS_KEY in values:
        epochs = values[LOCAL_EPOCHS_KEY]
        if isinstance(epochs, float) and epochs.is_integer():
            epochs = int(epochs)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"{where}: local-epochs must be an integer >= 1, got {epochs!r}")
        out[LOCAL_EPOCHS_KEY] = int(epochs)
    return out


# ----------------------------------------------------------------------------- the server's ledger


def site_order(site: SiteInfo) -> tuple:
    """Known sites by site id (natural order), then unknown ones by node id."""
    if site.site_id is None:
        return (1, [], site.node_id)
    return (0, natural_key(site.site_id), site.node_id)


def _int_or_none(value: float | None) -> int | None:
    return int(value) if value is not None else None


_ROUND_NODE_FIELDS = ("train", "evaluate", "failed", "simulated_s")


class FetsLedger:
    """Per-strategy record of the sites and rounds; the mixin in ``fedtumor/federation/strategy.py`` feeds it."""

    def __init__(self) -> None:
        self.sites: dict[int, SiteInfo] = {}
        self.rounds: dict[int, RoundRecord] = {}

    def site(self, node_id: int) -> SiteInfo:
        return self.sites.get(node_id) or SiteInfo(node_id=node_id)

    def history(self, server_round: int, defaults: Mapping[str, float | int]) -> TrainingHistory:
        completed = tuple(self.rounds[r] for r in sorted(self.rounds) if r < server_round)
        sites = tuple(sorted(self.sites.values(), key=site_order))
        return TrainingHistory(defaults=dict(defaults), rounds=completed, sites=sites)

    def hyperparameters(
        self, server_round: int, defaults: Mapping[str, Any], schedule: RoundHyperparameters
    ) -> dict[str, float | int]:
        """The round's hyperparameters from ``schedule``; ``defaults`` are the run config's."""
        known = {key: defaults[key] for key in HYPERPARAMETER_KEYS if key in defaults}
        values = schedule(server_round, self.history(server_round, known))
        return checked_hyperparameters(values, server_round, schedule)

    def select(
        self,
        server_round: int,
        offered: list[int],
        selector: CollaboratorSelector,
        rng: np.random.Generator,
        hyperparameters: Mapping[str, float | int],
    ) -> list[int]:
        """Ask ``selector`` which of the ``offered`` nodes train; record the round."""
        sites = sorted((self.site(node_id) for node_id in offered), key=site_order)
        chosen = checked_selection(selector(server_round, sites, rng), offered, server_round, selector)
        for node_id in chosen:
            site = self.site(node_id)
            self.sites[node_id] = dataclasses.replace(site, rounds_selected=site.rounds_selected + 1)
        self.rounds[server_round] = RoundRecord(server_round, tuple(offered), tuple(chosen), dict(hyperparameters))
        return chosen

    # -- resume (fedtumor/run/resume.py): plain values only; profiles are re-read from the run's profiles
    def state_dict(self) -> dict[str, Any]:
        sites = [{**dataclasses.asdict(site), "profile": None} for site in self.sites.values()]
        rounds = [dataclasses.asdict(record) for record in self.rounds.values()]
        return {"sites": sites, "rounds": rounds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Sites keep their old node ids until they reply again (a new run draws new node ids)."""
        self.sites = {int(s["node_id"]): SiteInfo(**s) for s in state.get("sites", [])}
        self.rounds = {}
        for record in state.get("rounds", []):
            by_node = {name: {int(k): v for k, v in record[name].items()} for name in _ROUND_NODE_FIELDS}
            self.rounds[int(record["server_round"])] = RoundRecord(
                **{**record, **by_node, "offered": tuple(record["offered"]), "selected": tuple(record["selected"])}
            )

    def _known_site(self, node_id: int, site_id: str) -> SiteInfo:
        """The node's record; a site first seen under another node id (a resumed run) moves over."""
        site = self.site(node_id)
        if site.site_id is None:
            moved = next((s for s in self.sites.values() if s.site_id == site_id and s.node_id != node_id), None)
            if moved is not None:
                del self.sites[moved.node_id]
                site = dataclasses.replace(moved, node_id=node_id)
        return site

    def learn(self, reply: SiteReply, profiles: SiteProfiles | None = None) -> None:
        """Update the node's :class:`SiteInfo` (and the round's record) from one reply."""
        site = self.site(reply.node_id) if reply.error is not None else self._known_site(reply.node_id, reply.site_id)
        record = self.rounds.get(reply.server_round)
        if reply.error is not None:
            known = {"site_id": reply.site_id} if reply.site_id != f"node-{reply.node_id}" else {}  # rejected replies
            site = dataclasses.replace(site, failures=site.failures + 1, last_error=reply.error, **known)
            self.sites[reply.node_id] = site
            if record is not None:
                record.failed[reply.node_id] = reply.error
            return
        metrics = dict(reply.metrics)
        changes: dict[str, Any] = {"site_id": reply.site_id}
        if profiles is not None and site.profile is None:
            changes["profile"] = profiles[reply.site_id]
        if reply.phase == "train":
            changes.update(
                num_examples=_int_or_none(metrics.get(NUM_EXAMPLES_KEY)),
                loss=metrics.get(LOSS_KEY),
                loss_before=metrics.get(LOSS_BEFORE_KEY),
                num_patches=_int_or_none(metrics.get(NUM_PATCHES_KEY)),
                train_seconds=metrics.get(TRAIN_SECONDS_KEY),
                last_trained_round=reply.server_round,
                rounds_trained=site.rounds_trained + 1,
                train_metrics=metrics,
            )
            profile = changes.get("profile") or site.profile
            if profile is not None:
                seconds = profile.round_seconds(
                    reply.download_bytes, metrics.get(NUM_PATCHES_KEY, 0.0), reply.upload_bytes
                )
                changes["simulated_s"] = seconds
                if record is not None:
                    record.simulated_s[reply.node_id] = seconds
            if record is not None:
                record.train[reply.node_id] = metrics
        else:
            changes.update(num_val_examples=_int_or_none(metrics.get(NUM_EXAMPLES_KEY)), val_metrics=metrics)
            if record is not None:
                record.evaluate[reply.node_id] = metrics
        self.sites[reply.node_id] = dataclasses.replace(site, **changes)
