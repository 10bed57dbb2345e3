"""The Flower ServerApp: builds the global model, runs the strategy, writes the run folder."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common.logger import FLOWER_LOGGER as log
from flwr.serverapp import Grid, ServerApp

from data_loaders.site import ensure_synthetic_cohort, load_heldout
from fedtumor.checkpoint import save_checkpoint
from fedtumor.config import load_run_config, resolve_output_dir
from fedtumor.errors import ConfigError, DataError
from fedtumor.model import build_model
from fedtumor.plots import draw_run_plots
from fedtumor.results import RunWriter
from fedtumor.simulated_time import SiteProfiles
from server_app.evaluation import HeldoutEvaluator
from server_app.study import StudyRecorder
from strategies.privacy import with_client_level_dp
from strategies.registry import build_strategy

app = ServerApp()

NODE_WAIT_S = 120.0


def _wait_for_nodes(grid: Grid, minimum: int) -> int:
    """Number of connected nodes once at least ``minimum`` are there (deployments join late)."""
    deadline = time.monotonic() + NODE_WAIT_S
    while True:
        count = len(list(grid.get_node_ids()))
        if count >= minimum or time.monotonic() > deadline:
            return count
        time.sleep(1.0)


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    try:
        config = load_run_config(context.run_config)
        strategy = with_client_level_dp(build_strategy(config), config)  # unchanged when DP is off
        profiles = SiteProfiles.from_setting(config.site_profiles)  # simulated time of each site
        n_nodes = _wait_for_nodes(grid, config.min_available_nodes)
        ensure_synthetic_cohort(config, n_nodes)  # no-op when data-dir is set
        heldout = load_heldout(config, n_nodes) if config.server_eval else []
    except (ConfigError, DataError) as exc:
        # One line naming the key or file; re-raised so the run's status is "failed".
        log.error("fedtumor: %s", exc)
        raise

    run_name = config.run_name or f"{config.strategy}-{datetime.now(UTC):%Y%m%d-%H%M%S}-run{context.run_id}"
    writer = RunWriter(resolve_output_dir(config) / run_name)
    writer.write_config({**config.to_run_config(), "num-nodes": n_nodes, "run-id": context.run_id})
    recorder = StudyRecorder(writer, profiles)
    strategy.reply_listener = recorder.on_site_reply
    strategy.site_profiles = profiles  # collaborator selectors see each site's profile

    torch.manual_seed(config.seed)  # the same seed gives the same initial global model
    model = build_model(config.model, config.base_filters)
    evaluator = HeldoutEvaluator(config, heldout, writer, recorder) if heldout else None
    log.info("fedtumor: %d nodes, %d held-out test subjects, results in %s", n_nodes, len(heldout), writer.run_dir)

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=config.num_server_rounds,
        timeout=config.round_timeout_s,
        train_config=ConfigRecord({"learning-rate": config.learning_rate, "local-epochs": config.local_epochs}),
        evaluate_fn=evaluator.evaluate if evaluator else recorder.check_round,
    )

    for server_round, metrics in result.evaluate_metrics_clientapp.items():
        writer.add_metrics(round=server_round, scope="global", split="val", metrics=_plain(metrics))
    save_checkpoint(writer.model_path("final_model.pt"), result.arrays.to_torch_state_dict(), config)
    summary = recorder.summary(
        config, n_nodes, wall_time_s=time.perf_counter() - started, strategy_parameters=strategy.plugin_parameters
    )
    writer.write_summary(summary)
    draw_run_plots(writer.run_dir)
    log.info(
        "fedtumor: run finished in %.1fs; final held-out %s; results in %s",
        summary["wall_time_s"],
        summary.get("final"),
        writer.run_dir,
    )


def _plain(metrics: MetricRecord) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}
