"""The local optimiser: one factory for the ClientApp, the baselines and the benches.

Run-config keys ``optimizer`` (``"adam"``, the default, or ``"sgd"``), ``momentum`` (SGD only)
and ``weight-decay`` (both) choose it; the learning rate comes with each round's config.

State policy: a federated site builds a **fresh** optimiser every round (the FedAvg and FeTS
habit). Adam's moments or SGD's momentum buffer describe the previous global model's loss
surface; after aggregation they would be stale, and keeping them in ``context.state`` would make
a site's update depend on its own history. The non-federated baselines keep one optimiser for
the whole run, as any single model does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from fedtumor.core.config import OPTIMIZER_NAMES, RunConfig


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``torch.optim.SGD`` over ``params``; ValueError on a bad setting.

    Example::

        optimizer = build_optimizer("sgd", model.parameters(), lr=0.01, momentum=0.9)
    """
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZER_NAMES)}")
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight decay must be >= 0, got {weight_decay}")
    if name == "adam":
        if momentum:
            raise ValueError("momentum applies to SGD only (Adam has its own moment estimates)")
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@dataclass(frozen=True)
class OptimizerSettings:
    """Which optimiser to build and how, without the learning rate (each round's config sends it).

    Example::

        settings = OptimizerSettings.from_config(config)
        optimizer = settings.build(model.parameters(), lr=0.01)
    """

    name: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        build_optimizer(self.name, [torch.nn.Parameter(torch.zeros(1))], 1.0, self.momentum, self.weight_decay)

    @classmethod
    def from_config(cls, config: RunConfig) -> OptimizerSettings:
        return cls(config.optimizer, config.momentum, config.weight_decay)

    def build(self, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return build_optimizer(self.name, params, lr, self.momentum, self.weight_decay)
