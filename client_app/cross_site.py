"""A site's side of cross-site evaluation: score the final models on its validation subjects, send scores.

The ClientApp's ``@app.query("cross_site")`` handler prepares the site (run config, data,
device, the method's client hooks) and calls :func:`cross_site_reply`. On
:data:`~fedtumor.federation.cross_site.STAGE_SCORE` the site scores

- ``global``: the final global model exactly as the server sent (and saved) it;
- ``<site-id> personal``: its own personal model, when the method keeps one
  (``hooks.load_personal`` returns True: FedBN's site norms, Ditto's personal model);
- ``<other-site> personal``: the other sites' personal models the message carries (only when
  the user opted in with ``cross-site-share-personal=true``);

and replies with one small MetricRecord per model (:data:`~fedtumor.run.cross_site.CROSS_SITE_METRICS`):
no arrays. On :data:`~fedtumor.federation.cross_site.STAGE_PERSONAL` it sends its personal model,
but only when its own run config opts in: a site never relies on the server's word for that.
"""

from __future__ import annotations

import copy

import torch
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import FLOWER_LOGGER as log

from data_loaders.pipelines import model_input, regions_array, subject_spacing
from data_loaders.site import SiteData
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.core.training import VolumeCase, evaluate_cases
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.cross_site import (
    PERSONAL_ARRAYS_KEY,
    SCORES_PREFIX,
    STAGE_KEY,
    STAGE_PERSONAL,
    STAGE_SCORE,
    shared_personal_models,
)
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CONFIG_KEY,
    MANIFEST_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    SITE_ID_KEY,
    SITE_RECORD_KEY,
)
from fedtumor.run.cross_site import GLOBAL_MODEL, cross_site_metrics, personal_model


def cross_site_reply(
    message: Message,
    config: RunConfig,
    site: SiteData,
    model: torch.nn.Module,
    device: torch.device,
    hooks: ClientHooks,
) -> Message:
    """The reply to a cross-site query: scores only (STAGE_SCORE) or, opted in, the personal model."""
    stage = str(message.content[CONFIG_KEY].get(STAGE_KEY, STAGE_SCORE))
    if stage == STAGE_SCORE:
        return _reply(message, site, score_models(message.content, config, site, model, device, hooks))
    if stage == STAGE_PERSONAL:
        return personal_model_reply(message, config, site, hooks)
    expected = f"{STAGE_SCORE!r} or {STAGE_PERSONAL!r}"
    raise ConfigError(f"cross-site query: unknown {STAGE_KEY} {stage!r} (expected {expected})")


def score_models(
    content: RecordDict,
    config: RunConfig,
    site: SiteData,
    model: torch.nn.Module,
    device: torch.device,
    hooks: ClientHooks,
) -> dict[str, dict[str, float]]:
    """``{model label: scores}`` of every model this site can evaluate on its validation subjects.

    ``model`` is any network of the run's architecture; its weights are replaced. A site
    without validation subjects scores nothing (its column stays empty).
    """
    cases = [VolumeCase(s["subject_id"], model_input(s), regions_array(s), subject_spacing(s)) for s in site.val]
    if not cases:
        log.warning("%s: no validation subjects, nothing to score in cross-site evaluation", site.site_id)
        return {}

    def score(network: torch.nn.Module) -> dict[str, float]:
        means, _, _ = evaluate_cases(network, cases, config.patch_size, device)
        return cross_site_metrics(means)

    model.load_state_dict(content[ARRAYS_KEY].to_torch_state_dict())  # as saved: not the method's view of it
    scores = {GLOBAL_MODEL: score(model)}
    personal = copy.deepcopy(model)  # hooks may build on the global weights (FedBN: all but the norms)
    if hooks.load_personal(personal, content):
        scores[personal_model(site.site_id)] = score(personal)
    for other_site, arrays in shared_personal_models(content).items():
        if other_site != site.site_id:
            personal.load_state_dict(arrays.to_torch_state_dict())
            scores[personal_model(other_site)] = score(personal)
    log.info("%s: cross-site scores of %d models on %d validation subjects", site.site_id, len(scores), len(cases))
    return scores


def personal_model_reply(message: Message, config: RunConfig, site: SiteData, hooks: ClientHooks) -> Message:
    """The site's personal model, sent only with ``cross-site-share-personal=true`` in its own run config."""
    if not config.cross_site_share_personal:
        raise ConfigError(
            "run-config key 'cross-site-share-personal' is false: this site keeps its personal model to itself"
        )
    reply = _site_content(site, num_examples=len(site.val))
    arrays = hooks.personal_arrays(message.content)
    if arrays is not None:  # None: the method keeps no personal model
        reply[PERSONAL_ARRAYS_KEY] = arrays
    return Message(content=reply, reply_to=message)


def _site_content(site: SiteData, num_examples: int) -> RecordDict:
    return RecordDict(
        {
            METRICS_KEY: MetricRecord({NUM_EXAMPLES_KEY: num_examples}),
            SITE_RECORD_KEY: ConfigRecord({SITE_ID_KEY: site.site_id, MANIFEST_KEY: site.manifest_sha256}),
        }
    )


def _reply(message: Message, site: SiteData, scores: dict[str, dict[str, float]]) -> Message:
    content = _site_content(site, num_examples=len(site.val))
    for label, metrics in scores.items():
        content[f"{SCORES_PREFIX}{label}"] = MetricRecord(metrics)
    return Message(content=content, reply_to=message)
