"""Cross-site evaluation at the end of a federated run: every model a site can score, on every site.

With ``cross-site-eval=true`` the ServerApp calls :func:`evaluate_cross_site` once training is
done. It sends every connected site one Flower ``query`` message (``query.cross_site``) with
the final global model; each site scores the global model and, where the method keeps one,
its own personal model on its validation subjects and replies with scores only. With
``cross-site-share-personal=true`` a first query collects the personal models, and each site
then also scores the other sites' personal models. The matrix goes to the run folder
(fedtumor/run/cross_site.py), an audit-log entry records the scores and what each reply held
(the evidence that no model left a site), and summary.json gets the mean-Dice matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.logger import FLOWER_LOGGER as log
from flwr.serverapp import Grid

from fedtumor.core.config import RunConfig
from fedtumor.core.ordering import natural_key
from fedtumor.federation.cross_site import (
    CROSS_SITE_ACTION,
    PERSONAL_ARRAYS_KEY,
    SHARED_PERSONAL_PREFIX,
    STAGE_KEY,
    STAGE_PERSONAL,
    STAGE_SCORE,
    scores_of,
)
from fedtumor.federation.plugin import StrategyPlugin
from fedtumor.federation.replies import describe_reply
from fedtumor.federation.wire import ARRAYS_KEY, CLIENT_HOOK_KEY, CONFIG_KEY
from fedtumor.run.audit import AuditLog
from fedtumor.run.cross_site import GLOBAL_MODEL, matrix_cells, write_cross_site

CROSS_SITE_MESSAGE_TYPE = f"{MessageType.QUERY}.{CROSS_SITE_ACTION}"
CROSS_SITE_GROUP = "cross-site"
AUDIT_EVENT = "cross-site"


@dataclass
class CrossSiteResult:
    """Scores ``{model: {site: {metric: value}}}``, what each site's reply held, and the sites that failed."""

    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # stage -> site -> record kind -> record names: what left each site
    reply_records: dict[str, dict[str, dict[str, list[str]]]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # site -> error

    def add_reply(self, stage: str, message: Message) -> str | None:
        """Record one reply to ``stage``; its site id, or None for an error reply."""
        reply = describe_reply(0, AUDIT_EVENT, message)
        if message.has_error():
            self.failures[reply.site_id] = reply.error or "error"
            return None
        content = message.content
        self.reply_records.setdefault(stage, {})[reply.site_id] = {
            "array_records": sorted(content.array_records),
            "metric_records": sorted(content.metric_records),
            "config_records": sorted(content.config_records),
        }
        return reply.site_id

    def ordered_scores(self) -> dict[str, dict[str, dict[str, float]]]:
        """Rows in reading order: the global model, then the sites' models by site id."""
        labels = sorted(self.scores, key=lambda label: (label != GLOBAL_MODEL, natural_key(label)))
        return {label: self.scores[label] for label in labels}


class CrossSiteEvaluation:
    """The query rounds of cross-site evaluation, settings declared here and nowhere else.

    Example::

        result = CrossSiteEvaluation(grid, share_personal=False, client_hook="fedbn", timeout_s=600).run(arrays)
        result.scores["global"]["site-1"]["mean_dice"]
    """

    def __init__(self, grid: Grid, *, share_personal: bool, client_hook: str | None, timeout_s: float):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.grid = grid
        self.share_personal = share_personal
        self.client_hook = client_hook
        self.timeout_s = timeout_s

    def run(self, global_arrays: ArrayRecord, node_ids: Iterable[int] | None = None) -> CrossSiteResult:
        nodes = sorted(node_ids if node_ids is not None else self.grid.get_node_ids())
        result = CrossSiteResult()
        personal: dict[str, ArrayRecord] = {}
        node_sites: dict[int, str] = {}
        if self.share_personal:
            for reply in self._ask(nodes, global_arrays, STAGE_PERSONAL, lambda node: {}):
                site_id = result.add_reply(STAGE_PERSONAL, reply)
                if site_id is not None:
                    node_sites[reply.metadata.src_node_id] = site_id
                    if PERSONAL_ARRAYS_KEY in reply.content.array_records:
                        personal[site_id] = reply.content.array_records[PERSONAL_ARRAYS_KEY]

        def others(node: int) -> dict[str, ArrayRecord]:
            own = node_sites.get(node)
            return {f"{SHARED_PERSONAL_PREFIX}{site}": arrays for site, arrays in personal.items() if site != own}

        for reply in self._ask(nodes, global_arrays, STAGE_SCORE, others):
            site_id = result.add_reply(STAGE_SCORE, reply)
            if site_id is None:
                continue
            for label, metrics in scores_of(reply.content).items():
                result.scores.setdefault(label, {})[site_id] = metrics
        return result

    def _ask(self, nodes: list[int], global_arrays: ArrayRecord, stage: str, extra) -> list[Message]:
        config = ConfigRecord({STAGE_KEY: stage, **({CLIENT_HOOK_KEY: self.client_hook} if self.client_hook else {})})
        messages = [
            Message(
                RecordDict({ARRAYS_KEY: global_arrays, CONFIG_KEY: config, **extra(node)}),
                dst_node_id=node,
                message_type=CROSS_SITE_MESSAGE_TYPE,
                group_id=CROSS_SITE_GROUP,
            )
            for node in nodes
        ]
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout_s))
        if len(replies) < len(messages):
            log.warning("fedtumor: cross-site %s: %d of %d sites replied in time", stage, len(replies), len(messages))
        return replies


def evaluate_cross_site(
    grid: Grid,
    config: RunConfig,
    plugin: type[StrategyPlugin],
    final_state: Mapping[str, Any],
    run_dir: Path,
    audit: AuditLog,
) -> dict[str, Any]:
    """With ``cross-site-eval`` on: run it, write the files and the audit entry; summary.json's block.

    Returns ``{}`` when the key is off, so the caller can merge the result into the summary unchanged.
    """
    if not config.cross_site_eval:
        return {}
    evaluation = CrossSiteEvaluation(
        grid,
        share_personal=config.cross_site_share_personal,
        client_hook=plugin.name if plugin.client_hooks is not None else None,
        timeout_s=config.round_timeout_s,
    )
    try:
        result = evaluation.run(ArrayRecord(dict(final_state)))
    except Exception as exc:  # noqa: BLE001 - training is done and saved: a failed extra must not fail the run
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        log.error("fedtumor: cross-site evaluation failed: %s", reason)
        audit.append(AUDIT_EVENT, error=reason)
        return {"cross_site": {"error": reason}}
    for site, error in sorted(result.failures.items()):
        log.warning("fedtumor: cross-site evaluation: %s failed: %s", site, error)
    scores = result.ordered_scores()
    matrix = matrix_cells(scores)
    if scores:
        write_cross_site(run_dir, scores, title=f"Cross-site evaluation ({config.strategy})")
        log.info(
            "fedtumor: cross-site evaluation: %d models on %d sites",
            len(matrix),
            len(result.reply_records[STAGE_SCORE]),
        )
    else:
        log.warning("fedtumor: cross-site evaluation: no site returned scores; no matrix written")
    audit.append(
        AUDIT_EVENT,
        share_personal=config.cross_site_share_personal,
        mean_dice=matrix,
        replies=result.reply_records,
        failures=result.failures,
    )
    return {"cross_site": {"share_personal": config.cross_site_share_personal, "mean_dice": matrix}}
