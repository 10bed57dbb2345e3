"""The Flower ClientApp: one site's training and validation on its own TorchIO pipeline.

Simulated sites find their data through ``partition-id`` (a partition of the cohort);
deployed SuperNodes through ``data-dir`` in their node config. A site whose data is
unusable replies with an error naming its site id, the subject and the file (relative to
``data-dir`` on a deployed node), so the round goes on without it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.logger import FLOWER_LOGGER as log

from client_app.cross_site import cross_site_reply
from client_app.personal import personal_trainer, site_heldout_cases, site_scores, volume_cases
from client_app.privacy import clip_update_when_asked
from data_loaders.round_patches import round_patch_batches
from data_loaders.site import SiteData, load_site, node_site_id
from data_loaders.site_cache import SiteCache
from data_loaders.validation import relative_to_folder
from fedtumor.core.config import RunConfig, load_run_config
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.core.losses import build_loss
from fedtumor.core.model import build_model
from fedtumor.core.optimizers import OptimizerSettings
from fedtumor.core.training import SiteRound, resolve_device, train_site_round
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.cross_site import CROSS_SITE_ACTION
from fedtumor.federation.faults import FAULT_INJECTION_KEY
from fedtumor.federation.registry import client_hooks_for
from fedtumor.federation.replies import SITE_ERROR_CODE, site_error_reason
from fedtumor.federation.warm_up import WARM_UP_ACTION
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CONFIG_KEY,
    LEARNING_RATE_KEY,
    LOCAL_EPOCHS_KEY,
    LOSS_AFTER_KEY,
    LOSS_BEFORE_KEY,
    LOSS_KEY,
    MANIFEST_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    NUM_PATCHES_KEY,
    REPORT_LOSS_BEFORE_KEY,
    SERVER_ROUND_KEY,
    SITE_ID_KEY,
    SITE_RECORD_KEY,
    TRAIN_SECONDS_KEY,
)

DATA_ERROR_CODE = SITE_ERROR_CODE  # an application error code, outside Flower's own range

app = ClientApp()

# Ray keeps a ClientApp's process alive across rounds, and may send it several sites' messages.
_site_cache = SiteCache()


def _site(config: RunConfig, context: Context) -> SiteData:
    key = (tuple(sorted(config.to_run_config().items())), tuple(sorted(context.node_config.items())))
    # The data check's warnings (not BraTS-preprocessed, unplaced files) reach the node's log, once.
    return _site_cache.get(key, lambda: load_site(config, context.node_config, on_warning=log.warning))


def _prepare(
    message: Message, context: Context
) -> tuple[RunConfig, SiteData, torch.nn.Module, torch.device, ClientHooks]:
    config = load_run_config(context.run_config)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    site = _site(config, context)
    model = build_model(config.model, config.base_filters)
    hooks = client_hooks_for(message.content[CONFIG_KEY], context.state)
    hooks.load_global(model, message.content)
    return config, site, model, resolve_device(config.device), hooks


def _reply(message: Message, site: SiteData, arrays: ArrayRecord | None, metrics: dict) -> Message:
    content = RecordDict(
        {
            METRICS_KEY: MetricRecord(metrics),
            SITE_RECORD_KEY: ConfigRecord({SITE_ID_KEY: site.site_id, MANIFEST_KEY: site.manifest_sha256}),
        }
    )
    if arrays is not None:
        content[ARRAYS_KEY] = arrays
    return Message(content=content, reply_to=message)


def _reply_on_bad_input(handler: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    """Bad data or config becomes an error reply naming the site id and the file or key, not a crash.

    The reason is ``site <site-id>: ...`` (the server reads the id from it); a deployed node's own
    folder is left out of it, so its files are named relative to ``data-dir``.
    """

    def wrapped(message: Message, context: Context) -> Message:
        try:
            return handler(message, context)
        except (DataError, ConfigError) as exc:
            text = " ".join(str(exc).split())
            if "data-dir" in context.node_config:
                text = relative_to_folder(text, Path(str(context.node_config["data-dir"])).expanduser())
            reason = site_error_reason(_site_id_for_errors(context), text)
            log.error(reason)
            return Message(Error(code=DATA_ERROR_CODE, reason=reason), reply_to=message)

    wrapped.__name__ = handler.__name__
    return wrapped


def _site_id_for_errors(context: Context) -> str | None:
    """The site id this node trains as, told without its data; None when the config cannot tell."""
    try:
        config = load_run_config(context.run_config)
    except ConfigError:
        config = None  # a deployed node's site id needs no run config
    return node_site_id(config, context.node_config)


def inject_faults_when_set(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The test-only ``fault-injection`` switch as a mod: with the key empty no fault code is imported or run."""
    if not context.run_config.get(FAULT_INJECTION_KEY, ""):
        return call_next(message, context)
    from fedtumor.federation.fault_mod import fault_injection_mod

    return fault_injection_mod(message, context, call_next)


def train_reply_metrics(num_examples: int, result: SiteRound) -> dict[str, int | float]:
    """A training reply's metrics (wire.py's names); the loss change only when it was probed."""
    metrics = {
        NUM_EXAMPLES_KEY: num_examples,
        LOSS_KEY: result.stats.loss,
        NUM_PATCHES_KEY: result.stats.num_patches,
        TRAIN_SECONDS_KEY: result.stats.seconds,
    }
    if result.loss_before is not None:
        metrics[LOSS_BEFORE_KEY] = result.loss_before
        metrics[LOSS_AFTER_KEY] = result.loss_after
    return metrics


# Mods listed first wrap the outside: DP clips what the fault mod leaves, i.e. exactly what is sent.
@app.train(mods=[clip_update_when_asked, inject_faults_when_set])
@_reply_on_bad_input
def train(message: Message, context: Context) -> Message:
    config, site, model, device, hooks = _prepare(message, context)
    server_round = int(message.content[CONFIG_KEY].get(SERVER_ROUND_KEY, 0))
    lr = float(message.content[CONFIG_KEY].get(LEARNING_RATE_KEY, config.learning_rate))
    epochs = int(message.content[CONFIG_KEY].get(LOCAL_EPOCHS_KEY, config.local_epochs))
    # Reproducible patches per site and round, different across both.
    epoch_batches = round_patch_batches(site.train, config, site.site_id, server_round)
    result = train_site_round(
        model,
        epoch_batches,
        epochs,
        build_loss(config.loss),
        device,
        learning_rate=lr,
        optimizer_settings=OptimizerSettings.from_config(config),  # fresh each round: fedtumor/core/optimizers.py
        # Cost-weighted strategies (FedCostWAvg, FedPIDAvg) compare the loss before and after local training.
        probe_loss_change=bool(message.content[CONFIG_KEY].get(REPORT_LOSS_BEFORE_KEY, False)),
        extra_loss=hooks.extra_loss,
        before_step=hooks.before_optimizer_step,
    )
    stats = result.stats
    log.info(
        "%s round %d: loss %.4f over %d patches in %.1fs",
        site.site_id,
        server_round,
        stats.loss,
        stats.num_patches,
        stats.seconds,
    )
    arrays = hooks.reply_arrays(model.cpu(), stats.num_steps, lr)
    # Methods with a personal model (Ditto) train it too, on this round's patches; it stays here.
    personal = hooks.train_personal(model, personal_trainer(config, epoch_batches, epochs, device, lr))
    return _reply(message, site, arrays, {**train_reply_metrics(len(site.train), result), **personal})


@app.evaluate()
@_reply_on_bad_input
def evaluate(message: Message, context: Context) -> Message:
    config, site, model, device, hooks = _prepare(message, context)
    # The global model; with a personal one (FedBN, Ditto) that too, and on the held-out set when asked.
    heldout = partial(site_heldout_cases, config, context.node_config, message.content[CONFIG_KEY])
    scores = site_scores(model, hooks, message.content, volume_cases(site.val), config.patch_size, device, heldout)
    return _reply(message, site, None, {NUM_EXAMPLES_KEY: len(site.val), **scores})


@app.query(WARM_UP_ACTION)
@_reply_on_bad_input
def warm_up(message: Message, context: Context) -> Message:
    """Before round 1: this process has imported the app; now load the site's data, so round 1 costs a steady one."""
    site = _site(load_run_config(context.run_config), context)  # each round seeds its own patches: no result changes
    return _reply(message, site, None, {NUM_EXAMPLES_KEY: len(site.train)})


@app.query(CROSS_SITE_ACTION)
@_reply_on_bad_input
def cross_site(message: Message, context: Context) -> Message:
    """Scores of the run's final models on this site's validation subjects (client_app/cross_site.py)."""
    return cross_site_reply(message, *_prepare(message, context))
