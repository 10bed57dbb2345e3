"""The contract a strategy plugin fulfils: a name, parameters, a Flower strategy, client hooks.

A plugin is a class registered under the entry-point group ``fedtumor.strategies``::

    [project.entry-points."fedtumor.strategies"]
    fedmine = "my_package.fedmine:FedMinePlugin"

The built-ins register the same way, in fedtumor's own pyproject.toml.

:meth:`StrategyPlugin.build` receives the validated parameters and the run's
:class:`~fedtumor.federation.options.StrategyOptions` and passes both to its strategy's
constructor; the strategy is complete when it returns, nothing is set on it afterwards.

A plugin may also supply the FeTS Task 1 hooks (``fedtumor/federation/fets_hooks.py``) as class
attributes: ``select_collaborators`` (which sampled sites train each round) and
``round_hyperparameters`` (each round's learning rate and local epochs); the defaults train
every sampled site with the run config's values. Wrap a plain function in ``staticmethod``.
The registry puts them (or the run config's built-ins) into the options.

``weighting = "num-examples"`` declares that the strategy averages the sites' updates weighted
by their ``num-examples`` (FedAvg's rule); the conformance kit then checks that arithmetic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from flwr.serverapp.strategy import Strategy

from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.fets_hooks import CollaboratorSelector, RoundHyperparameters, all_sites, constant
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.params import ParameterValue
from fedtumor.federation.strategy import FedTumorStrategy


@dataclass(frozen=True)
class Parameter:
    """One tunable of a strategy: its default (which also fixes its type) and a one-line help."""

    default: ParameterValue
    help: str

    @property
    def type(self) -> type:
        return type(self.default)


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
    # How aggregate_train weights the sites' updates; "num-examples" promises a num-examples-weighted
    # mean before any server step (the kit's weighting check verifies it); None makes no promise.
    weighting: ClassVar[str | None] = None
    # Run-config values the strategy needs (key -> value), refused before the run starts when not met,
    # e.g. SCAFFOLD's {"optimizer": "sgd"} (fedtumor/federation/settings.py).
    required_run_config: ClassVar[Mapping[str, ParameterValue]] = {}
    # FeTS Task 1 hooks (fedtumor/federation/fets_hooks.py); run-config keys collaborator-selection and
    # round-hyperparameters, when set, take precedence.
    select_collaborators: ClassVar[CollaboratorSelector] = staticmethod(all_sites)
    round_hyperparameters: ClassVar[RoundHyperparameters] = staticmethod(constant)

    @abstractmethod
    def build(self, params: Mapping[str, ParameterValue], options: StrategyOptions) -> Strategy:
        """A Flower strategy with validated ``params`` (every declared parameter is present), built with ``options``."""


class FlowerStrategyPlugin(StrategyPlugin):
    """A plugin whose parameters are keyword arguments of one strategy class (``server-lr`` -> ``server_lr``)."""

    strategy_class: ClassVar[type[Strategy]]

    def build(self, params: Mapping[str, ParameterValue], options: StrategyOptions) -> Strategy:
        kwargs = {name.replace("-", "_"): value for name, value in params.items()}
        if issubclass(self.strategy_class, FedTumorStrategy):
            return self.strategy_class(options=options, **kwargs)
        # A bare Flower strategy (no reply checks, no records): only the sampling applies.
        return self.strategy_class(**options.flower_kwargs(), **kwargs)
