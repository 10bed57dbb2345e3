"""The small interface through which a strategy changes local training on a site.

The server names the hooks in each round's config (key ``client-hook``: a plugin name);
the ClientApp looks the plugin up in the registry and calls, in order:

1. ``load_global(model, content)`` when the global model arrives (FedBN keeps local norms);
2. ``extra_loss(model)`` added to each batch's loss (FedProx's proximal term);
3. ``before_optimizer_step(model)`` after ``backward()`` (SCAFFOLD's gradient correction);
4. ``reply_arrays(model, num_steps, learning_rate)`` for what is sent back (FedBN leaves norms out,
   SCAFFOLD adds control-variate updates);
5. ``train_personal(model, train)`` after that, for methods that keep a personal model (Ditto).

Personal models (personalised federated learning) stay on the site; only their scores travel.
``load_personal(model, content)`` puts the site's personal model into ``model`` and returns
True (FedBN: the global non-norm arrays plus the site's own norms; Ditto: the model kept in
``state``); the plain hooks have none and return False. ``personal_arrays(content)`` is the
personal model's whole state, for a user who opts in to sharing personal models (cross-site
evaluation); None when there is none. The ClientApp's evaluate handler scores the global
and, where there is one, the personal model (``client_app/personal_eval.py``).

``state`` is the node's ``context.state``: a RecordDict that persists across rounds on the
same node. A round config without ``client-hook`` gives the plain :class:`ClientHooks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, RecordDict

from fedtumor.core.training import TrainStats
from fedtumor.federation.wire import ARRAYS_KEY

# Trains a model on this round's patches as the site's local training does, with an extra loss term.
PersonalTrainer = Callable[[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor | None] | None], TrainStats]


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

    # -- personal models (personalised FL); the plain hooks have none ------------------
    def train_personal(self, model: torch.nn.Module, train: PersonalTrainer) -> dict[str, float]:
        """After local training of the global copy ``model``: train the personal model, return reply metrics.

        ``train(net, extra_loss)`` runs the site's local training on ``net``. Plain: nothing.
        """
        return {}

    def load_personal(self, model: torch.nn.Module, content: RecordDict) -> bool:
        """Load this site's personal model into ``model`` and return True; False when the method has none.

        ``content`` is the message from the server (its ``ARRAYS_KEY`` record the global model).

        Example::

            if hooks.load_personal(model, message.content):
                personal_scores = score(model)
        """
        return False

    def personal_arrays(self, content: RecordDict | None = None) -> ArrayRecord | None:
        """The personal model's whole state, or None when there is none (or it needs ``content``'s global model).

        Only for a user who opts in to sharing personal models (cross-site evaluation).
        """
        return None
