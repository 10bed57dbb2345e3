"""Each site's reply as the server sees it: site id, metrics, or the error it sent.

Flower's strategies hand back only aggregated metrics; a study needs each site's too
(per-site Dice, failures per round).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, Message

from fedtumor.federation.wire import MANIFEST_KEY, SITE_ID_KEY, SITE_RECORD_KEY


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


def describe_reply(server_round: int, phase: str, message: Message) -> SiteReply:
    node_id = message.metadata.src_node_id
    if message.has_error():
        return SiteReply(server_round, phase, node_id, f"node-{node_id}", error=message.error.reason)
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
