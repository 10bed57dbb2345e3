"""What fedtumor adds in front of any Flower strategy: reply checks, site records, client hooks.

Mix :class:`FedTumorStrategy` in front of a Flower Message-API strategy::

    class FedAvg(FedTumorStrategy, flwr.serverapp.strategy.FedAvg): ...

It never changes how a strategy aggregates; it decides what reaches aggregation (sound
replies only), shows each site's reply to a listener (per-site metrics, failures), and
names the plugin's client hooks in every round's config.

It also runs the FeTS Task 1 hooks (``fedtumor/federation/fets_hooks.py``): each training round, the
plugin's ``select_collaborators`` picks which of the sampled nodes train (the messages to the
others are dropped) and its ``round_hyperparameters`` set ``learning-rate`` and
``local-epochs`` in the round's train config. What the selector knows about each site is
learned from the replies seen here (``fets_ledger``).

Reliability (docs/reliability.md): a site that raised, died or missed the round timeout is
reported to the listener and left out; a round with fewer sound training replies than
``min_train_replies`` (capped at the sites asked) ends the run with :class:`RoundFailedError`.
Sound replies are aggregated in site-id order, so the aggregate does not depend on which
site answered first. ``round_offset`` shifts Flower's round numbers (1, 2, ...) to the true
rounds of a resumed run; ``state_dict``/``load_state_dict`` carry what a strategy learnt
across a resume (override them, calling ``super()``, in strategies that keep state).
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
from fedtumor.federation.fets_hooks import CollaboratorSelector, FetsLedger, RoundHyperparameters, all_sites, constant
from fedtumor.federation.replies import SiteReply, SiteReplyListener, array_record_bytes, describe_reply
from fedtumor.federation.reply_checks import norm_problem, reply_problem, update_norm
from fedtumor.federation.simulated_time import SiteProfiles
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
    """Mixin; set ``reply_listener`` and ``client_hook_name`` after construction."""

    reply_listener: SiteReplyListener | None = None
    client_hook_name: str | None = None
    # Reply arrays outside the global model that this strategy expects (e.g. control variates).
    extra_reply_prefixes: tuple[str, ...] = ()
    _sent_arrays: ArrayRecord | None = None
    # FeTS Task 1 hooks; ``build_strategy`` sets them from the plugin and the run config.
    collaborator_selector: CollaboratorSelector = staticmethod(all_sites)
    round_hyperparameters: RoundHyperparameters = staticmethod(constant)
    selection_seed: int = 0
    site_profiles: SiteProfiles | None = None  # set by the ServerApp: SiteInfo gets profiles, simulated time
    # Reliability; ``build_strategy`` sets them from the run config.
    min_train_replies: int = 1
    max_update_norm: float = 0.0  # 0: no bound
    round_offset: int = 0  # rounds completed before this process started (resume)

    @property
    def fets_ledger(self) -> FetsLedger:
        """The sites and rounds seen so far (one per strategy object)."""
        if "_fets_ledger" not in self.__dict__:
            self.__dict__["_fets_ledger"] = FetsLedger()
        return self.__dict__["_fets_ledger"]

    # -- what the sites are told ------------------------------------------------------
    def hook_config(self, server_round: int) -> dict:
        """Extra round-config entries for the client hooks; override to add parameters."""
        return {CLIENT_HOOK_KEY: self.client_hook_name} if self.client_hook_name else {}

    @property
    def round_plans(self) -> dict[tuple[int, str], dict]:
        """(round, phase) -> {"asked": node ids, "config": the config sent}; read by the audit log."""
        return self.__dict__.setdefault("_round_plans", {})

    def site_name(self, node_id: int) -> str:
        """The site id a node replied with, else ``node-<id>``."""
        site_id = self.fets_ledger.site(node_id).site_id
        return site_id or f"node-{node_id}"

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        server_round += self.round_offset
        self._sent_arrays = arrays
        ledger = self.fets_ledger
        hyperparameters = ledger.hyperparameters(server_round, config, self.round_hyperparameters)
        config = ConfigRecord({**config, **self.hook_config(server_round), **hyperparameters})
        messages = list(super().configure_train(server_round, arrays, config, grid))
        offered = [message.metadata.dst_node_id for message in messages]
        if not offered:
            return messages
        rng = np.random.default_rng([self.selection_seed % 2**32, server_round])
        chosen = set(ledger.select(server_round, offered, self.collaborator_selector, rng, hyperparameters))
        log.info("round %d: %d of %d sampled sites train, %s", server_round, len(chosen), len(offered), hyperparameters)
        chosen_messages = [message for message in messages if message.metadata.dst_node_id in chosen]
        sent_config = next(iter(chosen_messages[0].content.config_records.values()), {}) if chosen_messages else {}
        self.round_plans[(server_round, "train")] = {
            "asked": [message.metadata.dst_node_id for message in chosen_messages],
            "config": dict(sent_config),
        }
        # What each site downloads: every ArrayRecord sent (the model, and e.g. SCAFFOLD's control variates).
        self._download_bytes = {
            message.metadata.dst_node_id: sum(map(array_record_bytes, message.content.array_records.values()))
            for message in chosen_messages
        }
        return chosen_messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        server_round += self.round_offset
        config = ConfigRecord({**config, **self.hook_config(server_round)})
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        asked = [message.metadata.dst_node_id for message in messages]
        self.round_plans[(server_round, "evaluate")] = {"asked": asked, "config": dict(config)}
        return messages

    # -- what reaches aggregation -----------------------------------------------------
    def _notify(self, reply: SiteReply) -> None:
        self.fets_ledger.learn(reply, self.site_profiles)
        if self.reply_listener is not None:
            self.reply_listener(reply)

    def train_reply_problem(self, message: Message) -> tuple[str | None, float | None]:
        """(why the train reply must not be aggregated or None, its update norm when it is sound)."""
        problem = reply_problem(message, self._sent_arrays, self.extra_reply_prefixes)
        if problem is not None or self._sent_arrays is None:
            return problem, None
        norm = update_norm(message, self._sent_arrays)
        return norm_problem(norm, self.max_update_norm), norm

    def _report_missing(self, server_round: int, phase: str, replies: list[Message]) -> None:
        """Sites asked this round that sent nothing back before the timeout (stalled or gone)."""
        answered = {message.metadata.src_node_id for message in replies}
        for node_id in self.round_plans.get((server_round, phase), {}).get("asked", []):
            if node_id not in answered:
                log.warning("round %d %s: %s: %s", server_round, phase, self.site_name(node_id), NO_REPLY)
                self._notify(SiteReply(server_round, phase, node_id, self.site_name(node_id), error=NO_REPLY))

    def _sound_replies(self, server_round: int, phase: str, replies: Iterable[Message]) -> list[Message]:
        replies = list(replies)
        self._report_missing(server_round, phase, replies)
        kept = []
        for message in replies:
            if message.has_error():
                reply = describe_reply(server_round, phase, message)
                reply = dataclasses.replace(reply, site_id=self.site_name(reply.node_id), error=_one_line(reply.error))
                log.warning("round %d %s: %s failed: %s", server_round, phase, reply.site_id, reply.error)
                self._notify(reply)
                continue
            problem, norm = self.train_reply_problem(message) if phase == "train" else (None, None)
            reply = describe_reply(server_round, phase, message)
            if problem is not None:
                log.warning("round %d: rejected the update of %s: %s", server_round, reply.site_id, problem)
                self._notify(SiteReply(server_round, phase, reply.node_id, reply.site_id, error=f"rejected: {problem}"))
                continue
            if phase == "train":
                sent = self.__dict__.get("_download_bytes", {}).get(reply.node_id)
                sent = array_record_bytes(self._sent_arrays) if sent is None else sent
                reply = dataclasses.replace(reply, download_bytes=sent, update_norm=norm)
            self._notify(reply)
            kept.append((reply.site_id, message))
        # Site-id order: the same replies give the same float sums whatever order they arrived in.
        kept.sort(key=lambda pair: natural_key(pair[0]))
        return [message for _, message in kept]

    def check_enough_replies(self, server_round: int, sound: list[Message]) -> None:
        """Raise :class:`RoundFailedError` when fewer sites than needed returned a usable update."""
        asked = self.round_plans.get((server_round, "train"), {}).get("asked", [])
        needed = min(self.min_train_replies, len(asked)) if asked else self.min_train_replies
        if len(sound) >= max(needed, 1):
            return
        failed = self.fets_ledger.rounds.get(server_round)
        reasons = "; ".join(
            f"{self.site_name(node_id)}: {error}" for node_id, error in (failed.failed.items() if failed else [])
        )
        raise RoundFailedError(
            f"round {server_round}: {len(sound)} of {len(asked)} sites returned a usable update, "
            f"min-train-replies needs {max(needed, 1)} ({reasons or 'no replies'})"
        )

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        server_round += self.round_offset
        sound = self._sound_replies(server_round, "train", replies)
        self.check_enough_replies(server_round, sound)
        return super().aggregate_train(server_round, sound)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        metrics = super().aggregate_evaluate(server_round, self._sound_replies(server_round, "evaluate", replies))
        plan = self.round_plans.get((server_round, "evaluate"))
        if plan is not None and metrics is not None:  # the run's global validation row (server_app/round_close.py)
            plan["aggregated"] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        return metrics

    # -- resume -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What this strategy has learnt (numpy arrays and plain values); extend in stateful strategies."""
        return {"fets_ledger": self.fets_ledger.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.fets_ledger.load_state_dict(state.get("fets_ledger", {}))
