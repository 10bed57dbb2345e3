"""The small interface through which a strategy changes local training on a site.

The server names the hooks in each round's config (key ``client-hook``: a plugin name);
the ClientApp looks the plugin up in the registry and calls, in order:

1. ``load_global(model, content)`` when the global model arrives (FedBN keeps local norms);
2. ``extra_loss(model)`` added to each batch's loss (FedProx's proximal term);
3. ``before_optimizer_step(model)`` after ``backward()`` (SCAFFOLD's gradient correction);
4. ``reply_arrays(model, num_steps, learning_rate)`` for what is sent back (FedBN leaves norms out,
   SCAFFOLD adds control-variate updates).

``state`` is the node's ``context.state``: a RecordDict that persists across rounds on the
same node. A round config without ``client-hook`` gives the plain :class:`ClientHooks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, RecordDict

from fedtumor.federation.wire import ARRAYS_KEY


class ClientHooks:
    """Plain local training: load everything, add nothing, send the whole model."""

    def __init__(self, round_config: Mapping[str, Any], state: RecordDict):
        self.round_config = round_config
        self.state = state

    def load_global(self, model: torch.nn.Module, content: RecordDict) -> None:
        model.load_state_dict(content[ARRAYS_KEY].to_torch_state_dict())

    def extra_loss(self, model: torch.nn.Module) -> torch.Tensor | None:
        return None

    def before_optimizer_step(self, model: torch.nn.Module) -> None:
        return None

    def reply_arrays(self, model: torch.nn.Module, num_steps: int, learning_rate: float) -> ArrayRecord:
        return ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items()})
