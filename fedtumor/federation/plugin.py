"""The contract a strategy plugin fulfils: a name, parameters, a Flower strategy, client hooks.

A plugin is a class registered under the entry-point group ``fedtumor.strategies``::

    [project.entry-points."fedtumor.strategies"]
    fedmine = "my_package.fedmine:FedMinePlugin"

The built-ins register the same way, in fedtumor's own pyproject.toml.

A plugin may also supply the FeTS Task 1 hooks (``fedtumor/federation/fets_hooks.py``) as class
attributes: ``select_collaborators`` (which sampled sites train each round) and
``round_hyperparameters`` (each round's learning rate and local epochs); the defaults train
every sampled site with the run config's values. Wrap a plain function in ``staticmethod``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flwr.serverapp.strategy import Strategy

from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.fets_hooks import CollaboratorSelector, RoundHyperparameters, all_sites, constant

ParameterValue = bool | int | float | str


@dataclass(frozen=True)
class Parameter:
    """One tunable of a strategy: its default (which also fixes its type) and a one-line help."""

    default: ParameterValue
    help: str

    @property
    def type(self) -> type:
        return type(self.default)


@dataclass(frozen=True)
class Sampling:
    """Run-wide settings every strategy receives (from the run config)."""

    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available_nodes: int = 2
    seed: int = 0

    def flower_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any of Flower's Message-API strategies."""
        return {
            "fraction_train": self.fraction_train,
            "fraction_evaluate": self.fraction_evaluate,
            "min_train_nodes": 1,
            "min_evaluate_nodes": 1 if self.fraction_evaluate > 0 else 0,
            "min_available_nodes": self.min_available_nodes,
        }


class StrategyPlugin(ABC):
    """Subclass, set the class attributes, implement :meth:`build`."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, shown by `fedtumor strategies list`
    reference: ClassVar[str] = ""  # the paper, for docs
    parameters: ClassVar[Mapping[str, Parameter]] = {}
    # Local-training changes this method needs; None means a plain ClientApp suffices.
    client_hooks: ClassVar[type[ClientHooks] | None] = None
    # Whether identical client updates must aggregate to that update (checked by the kit).
    preserves_identical_updates: ClassVar[bool] = True
    # FeTS Task 1 hooks (fedtumor/federation/fets_hooks.py); run-config keys collaborator-selection and
    # round-hyperparameters, when set, take precedence.
    select_collaborators: ClassVar[CollaboratorSelector] = staticmethod(all_sites)
    round_hyperparameters: ClassVar[RoundHyperparameters] = staticmethod(constant)

    @abstractmethod
    def build(self, params: Mapping[str, ParameterValue], sampling: Sampling) -> Strategy:
        """A Flower strategy with validated ``params`` (every declared parameter is present)."""


class FlowerStrategyPlugin(StrategyPlugin):
    """A plugin whose parameters are keyword arguments of one strategy class (``server-lr`` -> ``server_lr``)."""

    strategy_class: ClassVar[type[Strategy]]

    def build(self, params: Mapping[str, ParameterValue], sampling: Sampling) -> Strategy:
        kwargs = {name.replace("-", "_"): value for name, value in params.items()}
        return self.strategy_class(**sampling.flower_kwargs(), **kwargs)
