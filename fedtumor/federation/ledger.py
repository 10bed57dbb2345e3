"""What the server learns about each site during a run, written as it arrives.

With site profiles (``fedtumor/federation/simulated_time.py``) it also keeps simulated time: each sound
training reply costs its site download + ``num-patches`` x seconds per sample + upload; a
round lasts as long as its slowest site. Per round, metrics.csv gets ``global,train`` rows
``simulated_round_s`` and ``simulated_time_s`` (cumulative; round 0, the initial model, at 0)
and each site's train row ``simulated_s``; summary.json gets ``simulated_time_s``,
``time_budget_s`` and the FeTS ``convergence_score`` of the held-out mean Dice.
"""

from __future__ import annotations

from collections import defaultdict

from flwr.common.logger import FLOWER_LOGGER as log

from fedtumor.core.config import RunConfig
from fedtumor.core.metrics import mean_dice
from fedtumor.federation.privacy import privacy_summary
from fedtumor.federation.replies import SiteReply
from fedtumor.federation.simulated_time import SiteProfiles, convergence_score, round_duration
from fedtumor.federation.wire import NUM_EXAMPLES_KEY, NUM_PATCHES_KEY
from fedtumor.run.writer import GLOBAL_SCOPE, RunWriter

SPLIT_OF_PHASE = {"train": "train", "evaluate": "val"}
SUMMARY_METRICS = ("dice_et", "dice_tc", "dice_wt", "hd95_et", "hd95_tc", "hd95_wt")


def metric_name(key: str) -> str:
    """Flower metric keys are kebab-case; metrics.csv uses snake_case."""
    return key.replace("-", "_")


class StudyRecorder:
    """Per-site metrics to metrics.csv, failures to the log, held-out history for the summary."""

    def __init__(self, writer: RunWriter, profiles: SiteProfiles | None = None):
        self.writer = writer
        self.profiles = profiles
        self.site_seconds: dict[int, dict[str, float]] = defaultdict(dict)  # round -> site -> simulated s
        self.round_seconds: dict[int, float] = {}  # closed rounds: simulated duration
        self.round_end_s: dict[int, float] = {}  # closed rounds: cumulative simulated time
        self.successes: dict[tuple[int, str], list[str]] = defaultdict(list)
        self.failures: list[dict] = []
        self.test_history: dict[int, dict[str, float]] = {}
        self.sites: dict[str, float] = {}
        self.manifests: dict[str, list[str]] = {}  # site -> data-manifest hashes seen (one, unless its data changed)
        self.round_replies: dict[tuple[int, str], list[SiteReply]] = defaultdict(list)  # for the audit log

    def on_site_reply(self, reply: SiteReply) -> None:
        self.round_replies[(reply.server_round, reply.phase)].append(reply)
        if reply.data_manifest_sha256:
            seen = self.manifests.setdefault(reply.site_id, [])
            if reply.data_manifest_sha256 not in seen:
                if seen:
                    log.warning("%s: its data manifest changed during the run", reply.site_id)
                seen.append(reply.data_manifest_sha256)
        if reply.error is not None:
            self.failures.append(
                {
                    "round": reply.server_round,
                    "phase": reply.phase,
                    "node_id": reply.node_id,
                    "site": reply.site_id,
                    "error": reply.error,
                }
            )
            return
        self.successes[(reply.server_round, reply.phase)].append(reply.site_id)
        if reply.phase == "train":
            self.sites[reply.site_id] = reply.metrics.get(NUM_EXAMPLES_KEY, 0.0)
        metrics = {metric_name(k): v for k, v in reply.metrics.items()}
        if reply.phase == "train" and self.profiles is not None:
            seconds = self.profiles[reply.site_id].round_seconds(
                reply.download_bytes, reply.metrics.get(NUM_PATCHES_KEY, 0.0), reply.upload_bytes
            )
            self.site_seconds[reply.server_round][reply.site_id] = seconds
            metrics["simulated_s"] = seconds
        self.writer.add_metrics(
            round=reply.server_round, scope=reply.site_id, split=SPLIT_OF_PHASE[reply.phase], metrics=metrics
        )

    def check_round(self, server_round: int, arrays=None) -> None:
        """End the run with a clear error when no site returned an update this round."""
        if server_round >= 1 and not self.successes.get((server_round, "train")):
            reasons = "; ".join(f["error"] for f in self.failures if f["round"] == server_round) or "no replies"
            raise RuntimeError(f"round {server_round}: no site returned a model update ({reasons})")
        self.close_round(server_round)

    def close_round(self, server_round: int) -> None:
        """Record the round's simulated duration (its slowest site) once its training is over."""
        if self.profiles is None or server_round in self.round_seconds:
            return
        seconds = round_duration(self.site_seconds.get(server_round, {}).values()) if server_round >= 1 else 0.0
        previous = max((r for r in self.round_end_s if r < server_round), default=None)
        self.round_seconds[server_round] = seconds
        self.round_end_s[server_round] = (self.round_end_s[previous] if previous is not None else 0.0) + seconds
        self.writer.add_metrics(
            round=server_round,
            scope=GLOBAL_SCOPE,
            split="train",
            metrics={"simulated_round_s": seconds, "simulated_time_s": self.round_end_s[server_round]},
        )

    def record_test(self, server_round: int, metrics: dict[str, float]) -> None:
        self.test_history[server_round] = metrics

    # -- resume: what the summary needs from rounds run before the interruption
    def state_dict(self) -> dict:
        return {
            "test_history": {str(r): m for r, m in self.test_history.items()},
            "sites": dict(self.sites),
            "failures": list(self.failures),
            "manifests": {site: list(hashes) for site, hashes in self.manifests.items()},
            "round_seconds": {str(r): s for r, s in self.round_seconds.items()},
            "round_end_s": {str(r): s for r, s in self.round_end_s.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.test_history = {int(r): dict(m) for r, m in state.get("test_history", {}).items()}
        self.sites = dict(state.get("sites", {}))
        self.failures = list(state.get("failures", []))
        self.manifests = {site: list(hashes) for site, hashes in state.get("manifests", {}).items()}
        self.round_seconds = {int(r): float(s) for r, s in state.get("round_seconds", {}).items()}
        self.round_end_s = {int(r): float(s) for r, s in state.get("round_end_s", {}).items()}

    def summary(self, config: RunConfig, n_nodes: int, wall_time_s: float, strategy_parameters: dict) -> dict:
        summary: dict = {
            "strategy": config.strategy,
            "strategy_parameters": strategy_parameters,
            "rounds": config.num_server_rounds,
            "wall_time_s": round(wall_time_s, 2),
            "num_nodes": n_nodes,
            "sites": dict(sorted(self.sites.items())),
            "failed_replies": self.failures,
            "data_manifests": {site: hashes[-1] for site, hashes in sorted(self.manifests.items())},
            "differential_privacy": privacy_summary(config),
        }
        if self.test_history:
            last_round = max(self.test_history)
            summary["final"] = {name: self.test_history[last_round].get(name) for name in SUMMARY_METRICS}
            summary["final"]["round"] = last_round
            best_round = max(self.test_history, key=lambda r: mean_dice(self.test_history[r]))
            summary["best"] = {"round": best_round, "mean_dice": mean_dice(self.test_history[best_round])}
        if self.profiles is not None:
            summary["simulated_time_s"] = self.round_end_s[max(self.round_end_s)] if self.round_end_s else 0.0
            summary["time_budget_s"] = config.time_budget_s
            summary["convergence_score"] = self.convergence_score(config.time_budget_s)
        return summary

    def convergence_score(self, budget_s: float) -> float | None:
        """FeTS Task 1 score of the held-out mean Dice over simulated time; None without both."""
        rounds = sorted(r for r in self.test_history if r in self.round_end_s)
        if not rounds:
            return None
        return convergence_score(
            [self.round_end_s[r] for r in rounds], [mean_dice(self.test_history[r]) for r in rounds], budget_s
        )
