"""Aggregation strategies: built-ins and the way the ServerApp picks one by name."""

from __future__ import annotations

from flwr.serverapp.strategy import Strategy

from fedtumor.config import RunConfig
from fedtumor.errors import ConfigError
from strategies.fedavg import FedAvg

BUILT_IN = {"fedavg": FedAvg}


def build_strategy(config: RunConfig) -> Strategy:
    """The strategy named by run-config key ``strategy``, sampling as the config says."""
    try:
        strategy_class = BUILT_IN[config.strategy]
    except KeyError:
        raise ConfigError(
            f"run-config key 'strategy': unknown strategy {config.strategy!r}; available: {', '.join(sorted(BUILT_IN))}"
        ) from None
    return strategy_class(
        fraction_train=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        min_train_nodes=1,
        min_evaluate_nodes=1 if config.fraction_evaluate > 0 else 0,
        min_available_nodes=config.min_available_nodes,
    )
