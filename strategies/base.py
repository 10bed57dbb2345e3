"""What fedtumor adds in front of any Flower strategy: reply checks, site records, client hooks.

Mix :class:`FedTumorStrategy` in front of a Flower Message-API strategy::

    class FedAvg(FedTumorStrategy, flwr.serverapp.strategy.FedAvg): ...

It never changes how a strategy aggregates; it decides what reaches aggregation (sound
replies only), shows each site's reply to a listener (per-site metrics, failures), and
names the plugin's client hooks in every round's config.

It also runs the FeTS Task 1 hooks (``strategies/fets_hooks.py``): each training round, the
plugin's ``select_collaborators`` picks which of the sampled nodes train (the messages to the
others are dropped) and its ``round_hyperparameters`` set ``learning-rate`` and
``local-epochs`` in the round's train config. What the selector knows about each site is
learned from the replies seen here (``fets_ledger``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import FLOWER_LOGGER as log
from flwr.serverapp import Grid

from fedtumor.simulated_time import SiteProfiles
from strategies.client_hooks import CLIENT_HOOK_KEY
from strategies.fets_hooks import CollaboratorSelector, FetsLedger, RoundHyperparameters, all_sites, constant
from strategies.recording import SiteReply, SiteReplyListener, array_record_bytes, describe_reply
from strategies.reply_checks import reply_problem


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

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
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
        # What each site downloads: every ArrayRecord sent (the model, and e.g. SCAFFOLD's control variates).
        self._download_bytes = {
            message.metadata.dst_node_id: sum(map(array_record_bytes, message.content.array_records.values()))
            for message in chosen_messages
        }
        return chosen_messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        config = ConfigRecord({**config, **self.hook_config(server_round)})
        return super().configure_evaluate(server_round, arrays, config, grid)

    # -- what reaches aggregation -----------------------------------------------------
    def _notify(self, reply: SiteReply) -> None:
        self.fets_ledger.learn(reply, self.site_profiles)
        if self.reply_listener is not None:
            self.reply_listener(reply)

    def _sound_replies(self, server_round: int, phase: str, replies: Iterable[Message]) -> list[Message]:
        kept = []
        for message in replies:
            problem = None
            if phase == "train" and not message.has_error():
                problem = reply_problem(message, self._sent_arrays, self.extra_reply_prefixes)
            if problem is not None:
                reply = describe_reply(server_round, phase, message)
                log.warning("round %d: rejected the update of %s: %s", server_round, reply.site_id, problem)
                self._notify(SiteReply(server_round, phase, reply.node_id, reply.site_id, error=f"rejected: {problem}"))
                continue
            reply = describe_reply(server_round, phase, message)
            if phase == "train":
                sent = self.__dict__.get("_download_bytes", {}).get(reply.node_id)
                sent = array_record_bytes(self._sent_arrays) if sent is None else sent
                reply = dataclasses.replace(reply, download_bytes=sent)
            self._notify(reply)
            kept.append(message)
        return kept

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        return super().aggregate_train(server_round, self._sound_replies(server_round, "train", replies))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return super().aggregate_evaluate(server_round, self._sound_replies(server_round, "evaluate", replies))
