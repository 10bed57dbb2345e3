"""The federation the ServerApp runs: builds the global model, runs the strategy, writes the run folder.

Imported by ``server_app/app.py`` once the sites' warm-up is on its way, so this module's
imports (torch, MONAI, the strategies: seconds) overlap with the sites loading theirs.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.common.logger import FLOWER_LOGGER as log
from flwr.serverapp import Grid

from data_loaders.site import ensure_synthetic_cohort, load_heldout
from fedtumor.core.config import load_run_config
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.core.model import build_model
from fedtumor.federation.fets_ledger import ledger_for_time_model
from fedtumor.federation.privacy import with_client_level_dp
from fedtumor.federation.registry import load_registry, parse_strategy_config, strategy_options
from fedtumor.federation.settings import check_federation_keys
from fedtumor.federation.simulated_time import SiteProfiles
from fedtumor.federation.summary import run_summary
from fedtumor.federation.warm_up import PendingWarmUp, finish_warm_up
from fedtumor.federation.wire import LEARNING_RATE_KEY, LOCAL_EPOCHS_KEY
from fedtumor.run.audit import SUMMARY_HEAD_KEY, AuditLog
from fedtumor.run.checkpoint import save_checkpoint
from fedtumor.run.early_stopping import HELDOUT_MONITOR, VALIDATION_MONITOR, EarlyStopping
from fedtumor.run.files import CONFIG_FILE, FINAL_MODEL_FILE, SUMMARY_FILE
from fedtumor.run.folder import run_dir_for
from fedtumor.run.plots import draw_run_plots
from fedtumor.run.resume import ResumeState, check_resume, restore_rng_state
from fedtumor.run.tracking import open_tracker
from fedtumor.run.writer import RunWriter
from fedtumor.security.revocations import read_revocations, revocation_register
from server_app.cross_site import evaluate_cross_site
from server_app.evaluation import HeldoutEvaluator
from server_app.round_close import EarlyStop, RoundClose

NODE_WAIT_S = 120.0


def _wait_for_nodes(grid: Grid, minimum: int) -> int:
    """Number of connected nodes once at least ``minimum`` are there (deployments join late)."""
    deadline = time.monotonic() + NODE_WAIT_S
    while True:
        count = len(list(grid.get_node_ids()))
        if count >= minimum or time.monotonic() > deadline:
            return count
        time.sleep(1.0)


def run_federation(grid: Grid, context: Context, warming: PendingWarmUp | None, started: float) -> None:
    """The whole run, on ``grid`` (the ServerApp's PollingGrid); ``warming``: the sites' warm-up, if sent."""
    try:
        # In this order, so the strategy is complete when built: config, profiles, resume state, ledger, strategy.
        config = check_federation_keys(load_run_config(context.run_config))
        profiles = SiteProfiles.from_setting(config.site_profiles)  # simulated time of each site
        resumed = check_resume(config) if config.resume else None
        offset = resumed.round if resumed is not None else 0  # rounds completed before this process
        ledger = ledger_for_time_model(config, profiles)  # every site reply of the run, timed by time-model
        if resumed is not None:
            ledger.load_state_dict(resumed.recorder.get("ledger", {}))
        plugin = load_registry().get(config.strategy)
        strategy_parameters = parse_strategy_config(plugin, config.strategy_config)
        strategy = plugin().build(
            strategy_parameters, strategy_options(config, plugin, ledger=ledger, round_offset=offset)
        )
        strategy = with_client_level_dp(strategy, config)  # unchanged when DP is off
        if resumed is not None:
            # What it had learnt: momentum, control variates, ..., and with DP the privacy accountant.
            strategy.load_state_dict(resumed.strategy)
        run_name = config.run_name or f"{config.strategy}-{datetime.now(UTC):%Y%m%d-%H%M%S}-run{context.run_id}"
        run_dir = run_dir_for(config, run_name)
        n_nodes = _wait_for_nodes(grid, config.min_available_nodes)
        if resumed is not None:
            _check_same_federation(run_dir, n_nodes)
        ensure_synthetic_cohort(config, n_nodes)  # no-op when data-dir is set
        heldout = load_heldout(config, n_nodes) if config.server_eval else []
        tracker = open_tracker(config, run_dir, resume=resumed is not None)  # off unless tracking is set
        tracker.start()  # an unusable MLflow store stops the run here, in one line
    except (ConfigError, DataError) as exc:
        # One line naming the key or file; re-raised so the run's status is "failed".
        log.error("fedtumor: %s", exc)
        raise

    writer = RunWriter(run_dir, exist_ok=resumed is not None, tracker=tracker)
    audit = AuditLog(run_dir)

    torch.manual_seed(config.seed)  # the same seed gives the same initial global model
    model = build_model(config.model, config.base_filters)
    evaluator = HeldoutEvaluator(config, heldout, writer, ledger) if heldout else None
    if resumed is None:
        writer.write_config({**config.to_run_config(), "num-nodes": n_nodes, "run-id": context.run_id})
        audit.append("run-start", run_id=context.run_id, num_nodes=n_nodes, config=config.to_run_config())
        initial_arrays = ArrayRecord(model.state_dict())
    else:
        initial_arrays = _resume(resumed, config, writer, evaluator)
        audit.append(
            "resume",
            run_id=context.run_id,
            from_round=offset,
            model_sha256=resumed.model_sha256,
            config=config.to_run_config(),
        )
    evaluate_config = ConfigRecord()  # Flower copies it into every round's evaluate messages
    close = RoundClose(
        strategy,
        writer,
        ledger,
        audit,
        evaluate=evaluator.evaluate if evaluator else None,
        extra_state=lambda: {"best_mean_dice": evaluator.best_mean_dice if evaluator else None},
        round_offset=offset,
        early_stopping=_early_stopping(config, evaluator, resumed),
        evaluate_config=evaluate_config,
        heldout_every=config.server_eval_every,
        last_round=config.num_server_rounds,
        revocations=lambda: read_revocations(revocation_register()),  # the centre's `fedtumor centre revoke`
    )
    log.info("fedtumor: %d nodes, %d held-out test subjects, results in %s", n_nodes, len(heldout), writer.run_dir)
    if warming is not None:
        finish_warm_up(grid, warming, timeout_s=config.round_timeout_s)

    stopped_early = None  # summary.json's stopped_early: null when the run used all its rounds
    try:
        strategy.start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=config.num_server_rounds - offset,
            timeout=config.round_timeout_s,
            train_config=ConfigRecord({LEARNING_RATE_KEY: config.learning_rate, LOCAL_EPOCHS_KEY: config.local_epochs}),
            evaluate_config=evaluate_config,
            evaluate_fn=close,
        )
    except EarlyStop as stop:  # a completed run that used fewer rounds; its last round's model is the final one
        stopped_early = stop.report
        log.info("fedtumor: %s", stop)
    except Exception as exc:
        # The log and a failed summary say why the run stopped (e.g. too few sites replied); its last round is
        # resumable. Re-raised so the run's status is "failed".
        close.write_unfinished_round()
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        last_round = close.last_round if close.last_round is not None else (offset or None)
        head = audit.append("run-failed", last_completed_round=last_round, reason=reason)
        log.error("fedtumor: run stopped after round %s: %s", last_round, reason)
        try:
            failure = {"error": reason, "last_completed_round": last_round}
            writer.write_summary(
                _summary(ledger, config, n_nodes, started, strategy, strategy_parameters, offset, head, failure)
            )
        except Exception as write_error:  # noqa: BLE001 - the run's own error is the one to raise
            log.error("fedtumor: could not write the failed run's summary: %s", write_error)
        raise

    final_state = {key: torch.from_numpy(value) for key, value in close.last_arrays.items()}
    save_checkpoint(writer.model_path(FINAL_MODEL_FILE), final_state, config, close.last_round)
    cross_site = evaluate_cross_site(grid, config, plugin, final_state, writer.run_dir, audit)  # {} when off
    early = {"stopped_early": stopped_early} if stopped_early is not None else {}  # the audit says so only then
    head = audit.append("run-end", final_round=close.last_round, model_sha256=close.last_model_sha256, **early)
    summary = _summary(ledger, config, n_nodes, started, strategy, strategy_parameters, offset, head)
    summary["stopped_early"] = stopped_early
    summary.update(cross_site)
    writer.write_summary(summary)
    draw_run_plots(writer.run_dir)
    log.info(
        "fedtumor: run finished in %.1fs; final held-out %s; results in %s",
        summary["wall_time_s"],
        summary.get("final"),
        writer.run_dir,
    )


def _summary(ledger, config, n_nodes, started, strategy, strategy_parameters, offset, head, failure=None) -> dict:
    """summary.json: the run's, or with ``failure`` (error, last completed round) that of a run that stopped."""
    wall_time_s = time.perf_counter() - started
    summary = run_summary(
        ledger,
        config,
        n_nodes,
        wall_time_s=wall_time_s,
        strategy_parameters=strategy_parameters,
        strategy=strategy,
        **(failure or {}),
    )
    summary["resumed_from_round"] = offset or None
    summary[SUMMARY_HEAD_KEY] = head
    return summary


def _early_stopping(config, evaluator, resumed: ResumeState | None) -> EarlyStopping | None:
    """The run's early stopping on its monitored mean Dice, continued on resume; None when off.

    A resume state written without it (an older run, or patience 0 then) starts it afresh.
    """
    if not config.early_stopping_patience:
        return None
    stopper = EarlyStopping(
        config.early_stopping_patience, config.early_stopping_min_delta, _monitor(config, evaluator)
    )
    if resumed is not None and resumed.recorder.get("early_stopping"):
        stopper.load_state_dict(resumed.recorder["early_stopping"])
    return stopper


def _monitor(config, evaluator) -> str:
    """What early stopping watches: ``early-stopping-monitor``, where ``auto`` prefers the held-out set."""
    if config.stops_on_validation or (config.early_stopping_monitor == "auto" and evaluator is None):
        return VALIDATION_MONITOR
    return HELDOUT_MONITOR


def _check_same_federation(run_dir: Path, n_nodes: int) -> None:
    """The synthetic cohort and the site split depend on the number of sites: it must not change."""
    saved = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))["config"].get("num-nodes")
    if saved is not None and saved != n_nodes:
        raise ConfigError(
            f"run-config key 'resume': the run in {run_dir} had {saved} sites, this federation has {n_nodes} "
            "(use the same number of SuperNodes)"
        )


def _resume(resumed: ResumeState, config, writer: RunWriter, evaluator) -> ArrayRecord:
    """Restore what the interrupted run had after its last completed round; its global arrays.

    The ledger and the strategy got their state when they were built.
    """
    writer.drop_rounds_after(resumed.round)  # rows of the unfinished round are written again
    # The summary of the run that stopped (e.g. failed) no longer describes the folder; this run writes its own.
    (writer.run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    if evaluator is not None and resumed.recorder.get("best_mean_dice") is not None:
        evaluator.best_mean_dice = float(resumed.recorder["best_mean_dice"])
    restore_rng_state(resumed.rng)
    log.info("fedtumor: resuming %s after round %d of %d", writer.run_dir, resumed.round, config.num_server_rounds)
    return ArrayRecord({key: Array(np.ascontiguousarray(value)) for key, value in resumed.arrays.items()})
