"""What fedtumor adds in front of any Flower strategy: reply checks, site records, client hooks.

Mix :class:`FedTumorStrategy` in front of a Flower Message-API strategy::

    class FedAvg(FedTumorStrategy, flwr.serverapp.strategy.FedAvg): ...

It never changes how a strategy aggregates; it decides what reaches aggregation (sound
replies only), shows each site's reply to a listener (per-site metrics, failures), and
names the plugin's client hooks in every round's config.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import FLOWER_LOGGER as log
from flwr.serverapp import Grid

from strategies.client_hooks import CLIENT_HOOK_KEY
from strategies.recording import SiteReply, SiteReplyListener, describe_reply
from strategies.reply_checks import reply_problem


class FedTumorStrategy:
    """Mixin; set ``reply_listener`` and ``client_hook_name`` after construction."""

    reply_listener: SiteReplyListener | None = None
    client_hook_name: str | None = None
    # Reply arrays outside the global model that this strategy expects (e.g. control variates).
    extra_reply_prefixes: tuple[str, ...] = ()
    _sent_arrays: ArrayRecord | None = None

    # -- what the sites are told ------------------------------------------------------
    def hook_config(self, server_round: int) -> dict:
        """Extra round-config entries for the client hooks; override to add parameters."""
        return {CLIENT_HOOK_KEY: self.client_hook_name} if self.client_hook_name else {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        self._sent_arrays = arrays
        config = ConfigRecord({**config, **self.hook_config(server_round)})
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        config = ConfigRecord({**config, **self.hook_config(server_round)})
        return super().configure_evaluate(server_round, arrays, config, grid)

    # -- what reaches aggregation -----------------------------------------------------
    def _notify(self, reply: SiteReply) -> None:
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
            self._notify(describe_reply(server_round, phase, message))
            kept.append(message)
        return kept

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        return super().aggregate_train(server_round, self._sound_replies(server_round, "train", replies))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return super().aggregate_evaluate(server_round, self._sound_replies(server_round, "evaluate", replies))
