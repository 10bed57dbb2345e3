"""The run's ledger: every site reply recorded once, and everything the server reads from them.

The strategy mixin (``fedtumor/federation/strategy.py``) writes into it what each round asked
(:class:`~fedtumor.federation.records.RoundPlan`) and every reply it gets, sound or not. From
it are read:

- the collaborator selector's and the round-hyperparameter schedule's view of the run
  (:class:`~fedtumor.federation.records.SiteInfo`, ``TrainingHistory``);
- the audit log's round entry and metrics.csv's per-site rows (``server_app/round_close.py``);
- the summary (``fedtumor/federation/summary.py``): sites, failures, data manifests,
  held-out history, simulated time.

With site profiles (``fedtumor/federation/simulated_time.py``) it also keeps simulated time:
each sound training reply costs its site download + ``num-patches`` x seconds per sample +
upload; a round lasts as long as its slowest site (round 0, the initial model, at 0). Its
:meth:`SiteLedger.state_dict` carries all of it across a resume.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from flwr.common.logger import FLOWER_LOGGER as log

from fedtumor.federation.records import RoundPlan, RoundRecord, SiteInfo, TrainingHistory, site_order
from fedtumor.federation.replies import SiteReply
from fedtumor.federation.simulated_time import SiteProfiles, round_duration
from fedtumor.federation.wire import (
    LOSS_BEFORE_KEY,
    LOSS_KEY,
    NUM_EXAMPLES_KEY,
    NUM_PATCHES_KEY,
    TRAIN_SECONDS_KEY,
)

SPLIT_OF_PHASE = {"train": "train", "evaluate": "val"}
_ROUND_NODE_FIELDS = ("train", "evaluate", "failed", "simulated_s")


def metric_name(key: str) -> str:
    """Flower metric keys are kebab-case; metrics.csv uses snake_case."""
    return key.replace("-", "_")


def _int_or_none(value: float | None) -> int | None:
    return int(value) if value is not None else None


class SiteLedger:
    """The sites, rounds, replies, failures, data manifests, held-out scores and simulated time of a run."""

    def __init__(self, profiles: SiteProfiles | None = None):
        self.profiles = profiles
        self.sites: dict[int, SiteInfo] = {}  # by node id
        self.rounds: dict[int, RoundRecord] = {}
        self.plans: dict[tuple[int, str], RoundPlan] = {}  # (round, phase) -> what was sent
        self.replies: dict[tuple[int, str], list[SiteReply]] = defaultdict(list)  # in the order recorded
        self.failures: list[dict] = []  # every failed or rejected reply (summary.json)
        self.manifests: dict[str, list[str]] = {}  # site -> data-manifest hashes seen (one, unless its data changed)
        self.test_history: dict[int, dict[str, float]] = {}  # held-out test metrics per round
        self.round_seconds: dict[int, float] = {}  # closed rounds: simulated duration
        self.round_end_s: dict[int, float] = {}  # closed rounds: cumulative simulated time

    # -- what a node is known as --------------------------------------------------------
    def site(self, node_id: int) -> SiteInfo:
        return self.sites.get(node_id) or SiteInfo(node_id=node_id)

    def site_name(self, node_id: int) -> str:
        """The site id a node replied with, else ``node-<id>``."""
        return self.site(node_id).site_id or f"node-{node_id}"

    def offered_sites(self, node_ids: list[int]) -> list[SiteInfo]:
        """What is known of these nodes, in the order a collaborator selector gets them."""
        return sorted((self.site(node_id) for node_id in node_ids), key=site_order)

    def history(self, server_round: int, defaults: Mapping[str, float | int]) -> TrainingHistory:
        """What a round-hyperparameter schedule sees before ``server_round``."""
        completed = tuple(self.rounds[r] for r in sorted(self.rounds) if r < server_round)
        sites = tuple(sorted(self.sites.values(), key=site_order))
        return TrainingHistory(defaults=dict(defaults), rounds=completed, sites=sites)

    # -- what each round asked ----------------------------------------------------------
    def plan_train(
        self,
        server_round: int,
        offered: list[int],
        selected: list[int],
        hyperparameters: Mapping[str, float | int],
        asked: list[int],
        config: Mapping[str, Any],
    ) -> None:
        """A training round as configured: the selector's choice and the messages sent."""
        for node_id in selected:
            site = self.site(node_id)
            self.sites[node_id] = dataclasses.replace(site, rounds_selected=site.rounds_selected + 1)
        self.rounds[server_round] = RoundRecord(server_round, tuple(offered), tuple(selected), dict(hyperparameters))
        self.plans[(server_round, "train")] = RoundPlan(tuple(asked), dict(config))

    def plan_evaluate(self, server_round: int, asked: list[int], config: Mapping[str, Any]) -> None:
        self.plans[(server_round, "evaluate")] = RoundPlan(tuple(asked), dict(config))

    def plan(self, server_round: int, phase: str) -> RoundPlan | None:
        return self.plans.get((server_round, phase))

    def record_aggregated(self, server_round: int, metrics: Mapping[str, float]) -> None:
        """The strategy's aggregated validation metrics (metrics.csv's global val row)."""
        plan = self.plan(server_round, "evaluate")
        if plan is not None:
            self.plans[(server_round, "evaluate")] = dataclasses.replace(plan, aggregated=dict(metrics))

    # -- the replies --------------------------------------------------------------------
    def record(self, reply: SiteReply) -> None:
        """One site's reply (or its failure, rejection or silence) for a round's phase."""
        site = self.site(reply.node_id) if reply.error is not None else self._known_site(reply.node_id, reply.site_id)
        changes = self._failure(reply) if reply.error is not None else self._sound(reply, site)
        self.sites[reply.node_id] = dataclasses.replace(site, **changes)
        self.replies[(reply.server_round, reply.phase)].append(reply)
        if reply.data_manifest_sha256:
            seen = self.manifests.setdefault(reply.site_id, [])
            if reply.data_manifest_sha256 not in seen:
                if seen:
                    log.warning("%s: its data manifest changed during the run", reply.site_id)
                seen.append(reply.data_manifest_sha256)

    def replies_of(self, server_round: int, phase: str) -> list[SiteReply]:
        return self.replies.get((server_round, phase), [])

    def all_replies(self) -> Iterator[SiteReply]:
        for replies in self.replies.values():
            yield from replies

    def _round(self, server_round: int) -> RoundRecord:
        """The round's record; one for a round never configured here (replies fed in by hand)."""
        if server_round not in self.rounds:
            self.rounds[server_round] = RoundRecord(server_round, (), (), {})
        return self.rounds[server_round]

    def _failure(self, reply: SiteReply) -> dict[str, Any]:
        self._round(reply.server_round).failed[reply.node_id] = reply.error
        self.failures.append(
            {
                "round": reply.server_round,
                "phase": reply.phase,
                "node_id": reply.node_id,
                "site": reply.site_id,
                "error": reply.error,
            }
        )
        changes: dict[str, Any] = {"failures": self.site(reply.node_id).failures + 1, "last_error": reply.error}
        if reply.site_id != f"node-{reply.node_id}":  # a rejected reply said who sent it
            changes["site_id"] = reply.site_id
        return changes

    def _sound(self, reply: SiteReply, site: SiteInfo) -> dict[str, Any]:
        metrics = dict(reply.metrics)
        record = self._round(reply.server_round)
        changes: dict[str, Any] = {"site_id": reply.site_id}
        if self.profiles is not None and site.profile is None:
            changes["profile"] = self.profiles[reply.site_id]
        if reply.phase != "train":
            record.evaluate[reply.node_id] = metrics
            changes.update(num_val_examples=_int_or_none(metrics.get(NUM_EXAMPLES_KEY)), val_metrics=metrics)
            return changes
        if self.profiles is not None:
            seconds = self.profiles[reply.site_id].round_seconds(
                reply.download_bytes, metrics.get(NUM_PATCHES_KEY, 0.0), reply.upload_bytes
            )
            changes["simulated_s"] = record.simulated_s[reply.node_id] = seconds
        record.train[reply.node_id] = metrics
        changes.update(
            num_examples=_int_or_none(metrics.get(NUM_EXAMPLES_KEY)),
            loss=metrics.get(LOSS_KEY),
            loss_before=metrics.get(LOSS_BEFORE_KEY),
            num_patches=_int_or_none(metrics.get(NUM_PATCHES_KEY)),
            train_seconds=metrics.get(TRAIN_SECONDS_KEY),
            last_trained_round=reply.server_round,
            rounds_trained=site.rounds_trained + 1,
            train_metrics=metrics,
        )
        return changes

    def _known_site(self, node_id: int, site_id: str) -> SiteInfo:
        """The node's record; a site first seen under another node id (a resumed run) moves over."""
        site = self.site(node_id)
        if site.site_id is None:
            moved = next((s for s in self.sites.values() if s.site_id == site_id and s.node_id != node_id), None)
            if moved is not None:
                del self.sites[moved.node_id]
                site = dataclasses.replace(moved, node_id=node_id)
        return site

    def updates_averaged(self, server_round: int) -> int | None:
        """How many sound training replies the round had; None for a round not recorded here."""
        record = self.rounds.get(server_round)
        return len(record.train) if record is not None else None

    # -- closing a round ----------------------------------------------------------------
    def site_rows(self, server_round: int) -> list[tuple[str, str, dict[str, float]]]:
        """metrics.csv rows (scope, split, metrics) of the round's sound replies, in the order they came."""
        rows = []
        record = self.rounds.get(server_round)
        for phase in ("train", "evaluate"):
            for reply in self.replies_of(server_round, phase):
                if reply.error is not None:
                    continue
                metrics = {metric_name(k): v for k, v in reply.metrics.items()}
                if phase == "train" and self.profiles is not None:
                    metrics["simulated_s"] = record.simulated_s[reply.node_id]
                rows.append((reply.site_id, SPLIT_OF_PHASE[phase], metrics))
        return rows

    def close_round(self, server_round: int) -> tuple[float, float] | None:
        """Once a round's training is over: (its simulated duration, the run's simulated time) the first time.

        Raises RuntimeError when no site returned an update in the round (round 0 is the initial model).
        """
        if server_round >= 1 and not any(r.error is None for r in self.replies_of(server_round, "train")):
            reasons = "; ".join(f["error"] for f in self.failures if f["round"] == server_round) or "no replies"
            raise RuntimeError(f"round {server_round}: no site returned a model update ({reasons})")
        if self.profiles is None or server_round in self.round_seconds:
            return None
        record = self.rounds.get(server_round)
        seconds = round_duration(record.simulated_s.values() if record else ()) if server_round >= 1 else 0.0
        previous = max((r for r in self.round_end_s if r < server_round), default=None)
        self.round_seconds[server_round] = seconds
        self.round_end_s[server_round] = (self.round_end_s[previous] if previous is not None else 0.0) + seconds
        return seconds, self.round_end_s[server_round]

    def name_failures(self, server_round: int) -> None:
        """A node that failed before it ever replied is known by site id once it answers (e.g. evaluation)."""
        for failure in self.failures:
            if failure["round"] == server_round:
                failure["site"] = self.site_name(failure["node_id"])

    def record_test(self, server_round: int, metrics: dict[str, float]) -> None:
        self.test_history[server_round] = metrics

    # -- resume (fedtumor/run/resume.py): plain values only; profiles are re-read from the run's profiles
    def state_dict(self) -> dict[str, Any]:
        return {
            "sites": [{**dataclasses.asdict(site), "profile": None} for site in self.sites.values()],
            "rounds": [dataclasses.asdict(record) for record in self.rounds.values()],
            "failures": list(self.failures),
            "manifests": {site: list(hashes) for site, hashes in self.manifests.items()},
            "test_history": {str(r): m for r, m in self.test_history.items()},
            "round_seconds": {str(r): s for r, s in self.round_seconds.items()},
            "round_end_s": {str(r): s for r, s in self.round_end_s.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Sites keep their old node ids until they reply again (a new run draws new node ids)."""
        self.sites = {int(s["node_id"]): SiteInfo(**s) for s in state.get("sites", [])}
        self.rounds = {}
        for record in state.get("rounds", []):
            by_node = {name: {int(k): v for k, v in record[name].items()} for name in _ROUND_NODE_FIELDS}
            self.rounds[int(record["server_round"])] = RoundRecord(
                **{**record, **by_node, "offered": tuple(record["offered"]), "selected": tuple(record["selected"])}
            )
        self.failures = list(state.get("failures", []))
        self.manifests = {site: list(hashes) for site, hashes in state.get("manifests", {}).items()}
        self.test_history = {int(r): dict(m) for r, m in state.get("test_history", {}).items()}
        self.round_seconds = {int(r): float(s) for r, s in state.get("round_seconds", {}).items()}
        self.round_end_s = {int(r): float(s) for r, s in state.get("round_end_s", {}).items()}
