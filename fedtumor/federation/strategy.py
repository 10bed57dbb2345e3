"""What fedtumor adds in front of any Flower strategy: reply checks, the run's records, client hooks.

Mix :class:`FedTumorStrategy` in front of a Flower Message-API strategy and build it with the
run's :class:`~fedtumor.federation.options.StrategyOptions`::

    class FedAvg(FedTumorStrategy, flwr.serverapp.strategy.FedAvg): ...

    FedAvg(options=options, **flower_kwargs)  # the options' sampling goes to Flower's FedAvg

It never changes how a strategy aggregates; it decides what reaches aggregation (sound
replies only), records each site's reply in the run's ledger (``options.ledger``:
per-site metrics, failures, the audit log) and names the plugin's client hooks in every
round's config.

It also runs the FeTS Task 1 hooks (``fedtumor/federation/fets_hooks.py``): each training round, the
options' collaborator selector picks which of the sampled nodes train (the messages to the
others are dropped) and their round-hyperparameter schedule sets ``learning-rate`` and
``local-epochs`` in the round's train config. What the selector knows about each site is
what the ledger learnt from the replies.

Reliability (docs/reliability.md): a site that raised, died or missed the round timeout is
recorded and left out; a round with fewer sound training replies than ``min_train_replies``
(capped at the sites asked) ends the run with :class:`RoundFailedError`. Sound replies are
aggregated in site-id order, so the aggregate does not depend on which site answered first.
:attr:`FedTumorStrategy.sent_arrays` is the global model sent this round, for ``aggregate_train``.
``round_offset`` shifts Flower's round numbers (1, 2, ...) to the true rounds of a resumed
run; ``state_dict``/``load_state_dict`` carry what a strategy learnt across a resume
(override them, calling ``super()``, in strategies that keep state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import FLOWER_LOGGER as log
from flwr.serverapp import Grid

from fedtumor.core.ordering import natural_key
from fedtumor.federation.fets_hooks import HYPERPARAMETER_KEYS, collaborators_for, hyperparameters_for
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.node_quorum import QuorumGrid, asked_node_of, asked_nodes, running_quorum
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.replies import SiteReply, array_record_bytes, describe_reply
from fedtumor.federation.reply_checks import checked_updates, norm_problem
from fedtumor.federation.wire import CLIENT_HOOK_KEY

NO_REPLY = "no reply before the round timeout (round-timeout-s)"


class RoundFailedError(RuntimeError):
    """Too few sites returned a usable update for the round to count."""


def _one_line(text: str, limit: int = 300) -> str:
    """A failed reply's reason on one line; Flower puts the whole remote traceback in it."""
    text = " ".join(str(text).split())
    if "Message: " in text:  # Flower's ClientAppException: keep the ClientApp's own message
        text = text.rsplit("Message: ", 1)[1].rstrip("'>) ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class FedTumorStrategy:
    """Mixin, first in the bases; ``options`` are the run's, the other keyword arguments Flower's."""

    # Reply arrays outside the global model that this strategy expects (e.g. control variates).
    extra_reply_prefixes: tuple[str, ...] = ()

    def __init__(self, *, options: StrategyOptions | None = None, **kwargs: Any) -> None:
        options = options if options is not None else StrategyOptions()
        super().__init__(**{**options.flower_kwargs(), **kwargs})
        self.options = options
        self.ledger = options.ledger if options.ledger is not None else SiteLedger()
        self._sent_arrays: ArrayRecord | None = None  # the global model this round's sites received
        self._download_bytes: dict[int, int] = {}  # node id -> bytes of every ArrayRecord sent to it
        self._asked: dict[str, list[Message]] = {}  # phase -> this round's messages (ids set once sent)
        self._run_started = False  # the first round waits for min-available-nodes; later ones for fewer

    @property
    def sent_arrays(self) -> ArrayRecord | None:
        """The global model this round's sites received (set by ``configure_train``; None before).

        Read it in ``aggregate_train`` (e.g. to carry over arrays the sites do not send, or to
        take a server step from it); do not change it.
        """
        return self._sent_arrays

    # -- what the sites are told ------------------------------------------------------
    def hook_config(self, server_round: int) -> dict:
        """Extra round-config entries for the client hooks; override to add parameters."""
        name = self.options.client_hook_name
        return {CLIENT_HOOK_KEY: name} if name else {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        server_round += self.options.round_offset
        self._sent_arrays = arrays
        ledger = self.ledger
        defaults = {key: config[key] for key in HYPERPARAMETER_KEYS if key in config}
        schedule = self.options.round_hyperparameters
        hyperparameters = hyperparameters_for(schedule, server_round, ledger.history(server_round, defaults))
        config = ConfigRecord({**config, **self.hook_config(server_round), **hyperparameters})
        messages = list(super().configure_train(server_round, arrays, config, self._sampling_grid(grid)))
        offered = [message.metadata.dst_node_id for message in messages]
        if not offered:
            return messages
        rng = np.random.default_rng([self.options.seed % 2**32, server_round])
        selected = collaborators_for(
            self.options.collaborator_selector, server_round, ledger.offered_sites(offered), rng
        )
        chosen = set(selected)
        log.info("round %d: %d of %d sampled sites train, %s", server_round, len(chosen), len(offered), hyperparameters)
        chosen_messages = [message for message in messages if message.metadata.dst_node_id in chosen]
        sent_config = next(iter(chosen_messages[0].content.config_records.values()), {}) if chosen_messages else {}
        asked = [message.metadata.dst_node_id for message in chosen_messages]
        ledger.plan_train(server_round, offered, selected, hyperparameters, asked, sent_config)
        # What each site downloads: every ArrayRecord sent (the model, and e.g. SCAFFOLD's control variates).
        self._download_bytes = {
            message.metadata.dst_node_id: sum(map(array_record_bytes, message.content.array_records.values()))
            for message in chosen_messages
        }
        self._asked["train"] = chosen_messages
        return chosen_messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        server_round += self.options.round_offset
        config = ConfigRecord({**config, **self.hook_config(server_round)})
        messages = list(super().configure_evaluate(server_round, arrays, config, self._sampling_grid(grid)))
        self.ledger.plan_evaluate(server_round, [message.metadata.dst_node_id for message in messages], config)
        self._asked["evaluate"] = messages
        return messages

    def _sampling_grid(self, grid: Grid) -> Grid:
        """The run's first sampling waits for ``min-available-nodes``; later ones, bounded, for fewer.

        Once the run has started, a round goes ahead with the connected nodes as long as
        ``min-train-replies`` are (fedtumor/federation/node_quorum.py): a lost site must not stall it.
        """
        if not self._run_started:
            self._run_started = True
            return grid
        self.min_available_nodes = running_quorum(self.options.min_train_replies)
        return QuorumGrid(grid, self.min_available_nodes, self.options.node_wait_s)

    def replying_nodes(self, phase: str, replies: list[Message]) -> list[int]:
        """The asked node each reply answers (the SuperLink writes "Node Unavailable" replies itself)."""
        asked = asked_nodes(self._asked.get(phase, ()))
        return [asked_node_of(message, asked) for message in replies]

    # -- what reaches aggregation -----------------------------------------------------
    def train_reply_problems(self, messages: list[Message]) -> list[tuple[str | None, float | None]]:
        """Per train reply: (why it must not be aggregated or None, its update norm when it is sound)."""
        checked = checked_updates(messages, self._sent_arrays, self.extra_reply_prefixes)
        bound = self.options.max_update_norm
        return [
            (problem, None) if problem is not None or norm is None else (norm_problem(norm, bound), norm)
            for problem, norm in checked
        ]

    def _report_missing(self, server_round: int, phase: str, answered: set[int]) -> None:
        """Sites asked this round that sent nothing back before the timeout (stalled or gone)."""
        plan = self.ledger.plan(server_round, phase)
        for node_id in plan.asked if plan is not None else ():
            if node_id not in answered:
                name = self.ledger.site_name(node_id)
                log.warning("round %d %s: %s: %s", server_round, phase, name, NO_REPLY)
                self.ledger.record(SiteReply(server_round, phase, node_id, name, error=NO_REPLY))

    def _sound_replies(self, server_round: int, phase: str, replies: Iterable[Message]) -> list[Message]:
        replies = list(replies)
        nodes = self.replying_nodes(phase, replies)
        self._report_missing(server_round, phase, set(nodes))
        ledger = self.ledger
        kept = []
        answered = [message for message in replies if not message.has_error()]
        checks = dict(zip(map(id, answered), self.train_reply_problems(answered))) if phase == "train" else {}
        for message, node_id in zip(replies, nodes, strict=True):
            if message.has_error():
                reply = describe_reply(server_round, phase, message, node_id)
                if reply.site_id == f"node-{reply.node_id}":  # no site id in its reason
                    reply = dataclasses.replace(reply, site_id=ledger.site_name(reply.node_id))
                reply = dataclasses.replace(reply, error=_one_line(reply.error))
                log.warning("round %d %s: %s failed: %s", server_round, phase, reply.site_id, reply.error)
                ledger.record(reply)
                continue
            problem, norm = checks.get(id(message), (None, None))
            reply = describe_reply(server_round, phase, message)
            if problem is not None:
                log.warning("round %d: rejected the update of %s: %s", server_round, reply.site_id, problem)
                ledger.record(
                    SiteReply(server_round, phase, reply.node_id, reply.site_id, error=f"rejected: {problem}")
                )
                continue
            if phase == "train":
                sent = self._download_bytes.get(reply.node_id)
                sent = array_record_bytes(self._sent_arrays) if sent is None else sent
                reply = dataclasses.replace(reply, download_bytes=sent, update_norm=norm)
            ledger.record(reply)
            kept.append((reply.site_id, message))
        # Site-id order: the same replies give the same float sums whatever order they arrived in.
        kept.sort(key=lambda pair: natural_key(pair[0]))
        return [message for _, message in kept]

    def check_enough_replies(self, server_round: int, sound: list[Message]) -> None:
        """Raise :class:`RoundFailedError` when fewer sites than needed returned a usable update."""
        plan = self.ledger.plan(server_round, "train")
        asked = plan.asked if plan is not None else ()
        minimum = self.options.min_train_replies
        needed = min(minimum, len(asked)) if asked else minimum
        if len(sound) >= max(needed, 1):
            return
        failed = self.ledger.rounds.get(server_round)
        reasons = "; ".join(
            f"{self.ledger.site_name(node_id)}: {error}" for node_id, error in (failed.failed.items() if failed else [])
        )
        raise RoundFailedError(
            f"round {server_round}: {len(sound)} of {len(asked)} sites returned a usable update, "
            f"min-train-replies needs {max(needed, 1)} ({reasons or 'no replies'})"
        )

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        server_round += self.options.round_offset
        sound = self._sound_replies(server_round, "train", replies)
        self.check_enough_replies(server_round, sound)
        return super().aggregate_train(server_round, sound)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.options.round_offset
        metrics = super().aggregate_evaluate(server_round, self._sound_replies(server_round, "evaluate", replies))
        if metrics is not None:  # the run's global validation row (server_app/round_close.py)
            self.ledger.record_aggregated(
                server_round, {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            )
        return metrics

    # -- resume -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What this strategy has learnt (numpy arrays and plain values); extend in stateful strategies.

        The sites and rounds it has seen are the ledger's, saved with it.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; extend in stateful strategies."""
