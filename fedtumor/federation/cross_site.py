"""The cross-site evaluation messages between the ServerApp and the ClientApp (docs/evaluation.md).

Both are Flower ``query`` messages with action :data:`CROSS_SITE_ACTION` (``query.cross_site``,
routed to the ClientApp's ``@app.query("cross_site")`` handler); the stage in the config says
which. The server sends::

    content[ARRAYS_KEY]   ArrayRecord   the final global model
    content[CONFIG_KEY]   ConfigRecord  STAGE_KEY, CLIENT_HOOK_KEY (the method's client hooks)
    content["personal:<site-id>"]  ArrayRecord  another site's personal model (STAGE_SCORE, sharing on)

and a site replies, to STAGE_SCORE, only metric records (``scores:<model label>``, one per model
it scored) besides its site record; to STAGE_PERSONAL (sent only with
``cross-site-share-personal=true``, which the site checks in its own run config too) its personal
model under :data:`PERSONAL_ARRAYS_KEY`, or no arrays when the method keeps none.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, RecordDict

CROSS_SITE_ACTION = "cross_site"
STAGE_KEY = "cross-site-stage"
STAGE_PERSONAL = "personal-model"  # first query, sharing on only: each site's personal model
STAGE_SCORE = "score"  # every site scores every model it can

PERSONAL_ARRAYS_KEY = "personal"  # the reply to STAGE_PERSONAL
SHARED_PERSONAL_PREFIX = "personal:"  # + site id: a shared personal model sent to the other sites
SCORES_PREFIX = "scores:"  # + model label: one MetricRecord per scored model


def scores_of(content: RecordDict) -> dict[str, dict[str, float]]:
    """``{model label: {metric: value}}`` of a STAGE_SCORE reply."""
    return {
        key[len(SCORES_PREFIX) :]: {name: float(value) for name, value in record.items()}
        for key, record in content.metric_records.items()
        if key.startswith(SCORES_PREFIX)
    }


def shared_personal_models(content: RecordDict) -> dict[str, ArrayRecord]:
    """``{site id: ArrayRecord}`` of the other sites' personal models a STAGE_SCORE message carries."""
    return {
        key[len(SHARED_PERSONAL_PREFIX) :]: record
        for key, record in content.array_records.items()
        if key.startswith(SHARED_PERSONAL_PREFIX)
    }
