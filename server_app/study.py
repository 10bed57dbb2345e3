"""What the server learns about each site during a run, written as it arrives."""

from __future__ import annotations

from collections import defaultdict

from flwr.common.logger import FLOWER_LOGGER as log

from fedtumor.config import RunConfig
from fedtumor.results import RunWriter
from strategies.recording import SiteReply

SPLIT_OF_PHASE = {"train": "train", "evaluate": "val"}
SUMMARY_METRICS = ("dice_et", "dice_tc", "dice_wt", "hd95_et", "hd95_tc", "hd95_wt")


def metric_name(key: str) -> str:
    """Flower metric keys are kebab-case; metrics.csv uses snake_case."""
    return key.replace("-", "_")


class StudyRecorder:
    """Per-site metrics to metrics.csv, failures to the log, held-out history for the summary."""

    def __init__(self, writer: RunWriter):
        self.writer = writer
        self.successes: dict[tuple[int, str], list[str]] = defaultdict(list)
        self.failures: list[dict] = []
        self.test_history: dict[int, dict[str, float]] = {}
        self.sites: dict[str, float] = {}

    def on_site_reply(self, reply: SiteReply) -> None:
        if reply.error is not None:
            log.warning("round %d %s: %s failed: %s", reply.server_round, reply.phase, reply.site_id, reply.error)
            self.failures.append(
                {"round": reply.server_round, "phase": reply.phase, "node_id": reply.node_id, "error": reply.error}
            )
            return
        self.successes[(reply.server_round, reply.phase)].append(reply.site_id)
        if reply.phase == "train":
            self.sites[reply.site_id] = reply.metrics.get("num-examples", 0.0)
        metrics = {metric_name(k): v for k, v in reply.metrics.items()}
        self.writer.add_metrics(
            round=reply.server_round, scope=reply.site_id, split=SPLIT_OF_PHASE[reply.phase], metrics=metrics
        )

    def check_round(self, server_round: int, arrays=None) -> None:
        """End the run with a clear error when no site returned an update this round."""
        if server_round >= 1 and not self.successes.get((server_round, "train")):
            reasons = "; ".join(f["error"] for f in self.failures if f["round"] == server_round) or "no replies"
            raise RuntimeError(f"round {server_round}: no site returned a model update ({reasons})")

    def record_test(self, server_round: int, metrics: dict[str, float]) -> None:
        self.test_history[server_round] = metrics

    def summary(self, config: RunConfig, n_nodes: int, wall_time_s: float, strategy_parameters: dict) -> dict:
        summary: dict = {
            "strategy": config.strategy,
            "strategy_parameters": strategy_parameters,
            "rounds": config.num_server_rounds,
            "wall_time_s": round(wall_time_s, 2),
            "num_nodes": n_nodes,
            "sites": dict(sorted(self.sites.items())),
            "failed_replies": self.failures,
        }
        if self.test_history:
            last_round = max(self.test_history)
            summary["final"] = {name: self.test_history[last_round].get(name) for name in SUMMARY_METRICS}
            summary["final"]["round"] = last_round
            best_round = max(self.test_history, key=lambda r: mean_dice(self.test_history[r]))
            summary["best"] = {"round": best_round, "mean_dice": mean_dice(self.test_history[best_round])}
        return summary


def mean_dice(metrics: dict[str, float]) -> float:
    return (metrics["dice_et"] + metrics["dice_tc"] + metrics["dice_wt"]) / 3
