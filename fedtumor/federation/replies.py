"""Each site's reply as the server sees it: site id, metrics, or the error it sent.

Flower's strategies hand back only aggregated metrics; a study needs each site's too
(per-site Dice, failures per round).

A site whose data or config is unusable replies with an error of code :data:`SITE_ERROR_CODE`
whose reason is ``site <site-id>: <one line>`` (:func:`site_error_reason`), so a site that fails
before it ever replied is still named by its site id, not its node id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, Message

from fedtumor.federation.wire import MANIFEST_KEY, SITE_ID_KEY, SITE_RECORD_KEY

SITE_ERROR_CODE = 100  # bad site data or config (client_app/app.py); an application code, outside Flower's range
_SITE_PREFIX = "site "
_SITE_END = ": "


@dataclass(frozen=True)
class SiteReply:
    server_round: int
    phase: str  # "train" or "evaluate"
    node_id: int
    site_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    # Sizes for simulated time: the arrays the site received (train phase; set by the strategy
    # mixin) and the arrays it sent back (sum of array sizes, all ArrayRecords of the reply).
    download_bytes: int = 0
    upload_bytes: int = 0
    update_norm: float | None = None  # L2 norm of reply minus global model (train; set by the strategy mixin)
    data_manifest_sha256: str | None = None


def array_record_bytes(record: ArrayRecord | None) -> int:
    """Sum of the arrays' sizes (elements x item size), without deserialising them."""
    if record is None:
        return 0
    total = 0
    for array in record.values():
        try:
            total += int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize
        except TypeError:  # a dtype numpy does not know: count the serialised bytes
            total += len(array.data)
    return total


def site_error_reason(site_id: str | None, text: str) -> str:
    """The reason of a site's error reply: ``site <site-id>: <text>``, or the text alone when the id is unknown."""
    return f"{_SITE_PREFIX}{site_id}{_SITE_END}{text}" if site_id else text


def site_of_error(code: int, reason: str) -> str | None:
    """The site id an error reply written by :func:`site_error_reason` gives; None for any other error."""
    if code != SITE_ERROR_CODE or not reason.startswith(_SITE_PREFIX) or _SITE_END not in reason:
        return None
    site_id = reason[len(_SITE_PREFIX) :].split(_SITE_END, 1)[0]
    return site_id if site_id.strip() and "\n" not in site_id else None


def describe_reply(server_round: int, phase: str, message: Message, node_id: int | None = None) -> SiteReply:
    """What a reply says; an error reply is named by the site id its reason gives, else ``node-<id>``.

    The error is the whole reason, as the site sent it. ``node_id`` is the node the reply
    answers when that is not its sender (a SuperLink-written reply); default: the sender.
    """
    node_id = message.metadata.src_node_id if node_id is None else node_id
    if message.has_error():
        site_id = site_of_error(message.error.code, message.error.reason)
        return SiteReply(server_round, phase, node_id, site_id or f"node-{node_id}", error=message.error.reason)
    content = message.content
    site = content.config_records.get(SITE_RECORD_KEY)
    site_id = str(site[SITE_ID_KEY]) if site and "site-id" in site else f"node-{node_id}"
    manifest = str(site[MANIFEST_KEY]) if site and site.get(MANIFEST_KEY) else None
    metrics: dict[str, float] = {}
    for record in content.metric_records.values():
        metrics.update({k: float(v) for k, v in record.items() if isinstance(v, (int, float))})
    upload_bytes = sum(array_record_bytes(record) for record in content.array_records.values())
    return SiteReply(
        server_round, phase, node_id, site_id, metrics, upload_bytes=upload_bytes, data_manifest_sha256=manifest
    )
