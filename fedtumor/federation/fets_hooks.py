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

**What the server learns** (:class:`~fedtumor.federation.records.SiteInfo`): the run's
ledger (``fedtumor/federation/ledger.py``) updates a site's record from every reply: site id
(None until the site first replies), training subjects, last training loss, patches
processed, failures, federated validation metrics and, when the server has site profiles
(``fedtumor/federation/simulated_time.py``), the site's profile and the simulated duration of
its last training round. The strategy mixin (``fedtumor/federation/strategy.py``) calls the
hooks through :func:`collaborators_for` and :func:`hyperparameters_for`.

This module imports neither Flower nor torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedtumor.federation.params import parse_params
from fedtumor.federation.records import SiteInfo, TrainingHistory
from fedtumor.federation.wire import LEARNING_RATE_KEY, LOCAL_EPOCHS_KEY

HYPERPARAMETER_KEYS = (LEARNING_RATE_KEY, LOCAL_EPOCHS_KEY)


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
    name, *rest = re.split(r"\s+", text.strip(), maxsplit=1)
    if name not in table:
        raise ValueError(f"{name!r} is not one of {', '.join(table)}")
    factory, defaults = table[name]
    params = parse_params(rest[0] if rest else "", defaults, owner=name)
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


# ----------------------------------------------------------------------------- running the hooks


def hyperparameters_for(schedule: RoundHyperparameters, server_round: int, history: TrainingHistory) -> dict:
    """The round's learning rate and local epochs from ``schedule``, validated."""
    return checked_hyperparameters(schedule(server_round, history), server_round, schedule)


def collaborators_for(
    selector: CollaboratorSelector, server_round: int, sites: list[SiteInfo], rng: np.random.Generator
) -> list[int]:
    """The node ids among ``sites`` that train this round, validated."""
    offered = [site.node_id for site in sites]
    return checked_selection(selector(server_round, sites, rng), offered, server_round, selector)
