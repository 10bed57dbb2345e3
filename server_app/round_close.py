"""What happens when a round is over: its rows, evaluation, the audit entry, the resume state.

Flower calls ``evaluate_fn(round, arrays)`` after each round's training and federated
evaluation (and once with round 0 before the first). :class:`RoundClose` is that function.
It writes the round's per-site rows to metrics.csv from the run's ledger, closes the round
(no sound update ends the run; the simulated-time row), runs the held-out evaluation (every
``server-eval-every`` rounds and always on the final model: the last round or the early stop), then
appends the round's entry to ``audit.jsonl`` (with client-level DP, the epsilon spent so far)
and only then replaces ``resume_state.pt``, so a resume never skips a round the log lacks.
With early stopping on, the round's monitored mean Dice updates the :class:`EarlyStopping`
(saved with the resume state); when it says stop, :class:`EarlyStop` is raised once the round
is fully closed: Flower's ``Strategy.start`` has no other way to end a run early.
Flower numbers a resumed run's rounds from 1 again; ``round_offset`` maps them back to the
study's rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common.logger import FLOWER_LOGGER as log

from fedtumor.core.metrics import mean_dice
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.privacy import round_privacy
from fedtumor.federation.wire import MAY_BE_LAST_ROUND_KEY, NUM_EXAMPLES_KEY
from fedtumor.run.audit import AuditLog, model_sha256
from fedtumor.run.early_stopping import HELDOUT_MONITOR, EarlyStopping
from fedtumor.run.files import MANIFESTS_FILE
from fedtumor.run.resume import ResumeState, rng_state, save_resume_state
from fedtumor.run.writer import GLOBAL_SCOPE, RunWriter


class EarlyStop(Exception):  # noqa: N818 - a signal, not an error
    """Raised by :class:`RoundClose` after the round at which early stopping ends the run."""

    def __init__(self, report: dict):
        super().__init__(f"stopped early after round {report['round']}: {report['reason']}")
        self.report = report  # summary.json's stopped_early


def plain_metrics(metrics: MetricRecord | dict | None) -> dict[str, float]:
    return {key: float(value) for key, value in (metrics or {}).items() if isinstance(value, (int, float))}


class RoundClose:
    """``evaluate_fn`` for ``Strategy.start``; keeps the last global model for the final save."""

    def __init__(
        self,
        strategy,
        writer: RunWriter,
        ledger: SiteLedger,
        audit: AuditLog,
        evaluate: Callable[[int, ArrayRecord], MetricRecord | None] | None,
        extra_state: Callable[[], dict],
        round_offset: int = 0,
        early_stopping: EarlyStopping | None = None,
        evaluate_config: ConfigRecord | None = None,
        heldout_every: int = 1,
        last_round: int | None = None,
        revocations: Callable[[], Mapping[int, Mapping]] | None = None,
    ):
        self.strategy = strategy  # read for the resume state and, with DP, the epsilon spent
        self.writer = writer
        self.ledger = ledger
        self.audit = audit
        self.evaluate = evaluate  # held-out evaluation; None when the server has no test subjects
        self.extra_state = extra_state  # e.g. the evaluator's best score so far
        self.round_offset = round_offset
        self.early_stopping = early_stopping  # None or patience 0: the run uses all its rounds
        self.evaluate_config = evaluate_config  # the next rounds' evaluate config: told when one may be the last
        self.heldout_every = heldout_every  # server-eval-every: 0 scores only the final model
        self.final_round = last_round  # num-server-rounds: its model is the final one, always scored
        self.revocations = revocations  # the centre's revoked node keys (fedtumor/security/revocations.py)
        self._revocations_logged: set[int] = set()
        self.last_round: int | None = None
        self.last_arrays: dict[str, np.ndarray] | None = None
        self.last_model_sha256: str | None = None
        self._rows_written: set[int] = set()
        self._last_close_end: float | None = None  # perf_counter when the previous round's close ended

    def __call__(self, flower_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if flower_round == 0 and self.round_offset > 0:
            return None  # a resumed run: round 0 is the checkpoint, already evaluated and logged
        server_round = flower_round + self.round_offset
        close_started = time.perf_counter()
        self.write_site_rows(server_round)
        self._close(server_round)
        if self._stops_on_heldout:  # the rule needs this round's held-out score (server-eval-every is then 1)
            metrics = self.evaluate(server_round, arrays)
            stop = self._should_stop(server_round, metrics)
        else:
            stop = self._should_stop(server_round, None)
            metrics = self.evaluate(server_round, arrays) if self._heldout_due(server_round, stop) else None
        numpy_arrays = {key: array.numpy() for key, array in arrays.items()}
        sha256 = model_sha256(numpy_arrays)
        self._write_global_validation(server_round)
        self.ledger.name_failures(server_round)
        self._log_revocations(server_round)
        self.audit.append("round", round=server_round, model_sha256=sha256, **self.round_entry(server_round, metrics))
        self._write_manifests()
        save_resume_state(
            self.writer.run_dir,
            ResumeState(
                round=server_round,
                arrays=numpy_arrays,
                strategy=self.strategy.state_dict(),
                recorder={"ledger": self.ledger.state_dict(), **self.extra_state(), **self._stopping_state()},
                rng=rng_state(),
                model_sha256=sha256,
            ),
        )
        self.last_round, self.last_arrays, self.last_model_sha256 = server_round, numpy_arrays, sha256
        self._write_round_clock(server_round, close_started)
        log.info("round %d closed: model sha256 %s…, resume state saved", server_round, sha256[:12])
        if stop:
            raise EarlyStop(self.early_stopping.report())
        return metrics

    def _log_revocations(self, server_round: int) -> None:
        """A ``node-revoked`` audit entry for each of this run's nodes the centre revoked, once per ServerApp.

        Flower reports a revoked node's pending messages as "Node Unavailable" and leaves it out of
        later rounds; this entry says why, and from which round on its replies are refused.
        """
        if self.revocations is None:
            return
        for node_id, record in self.revocations().items():
            if node_id in self._revocations_logged or node_id not in self.ledger.sites:
                continue
            self._revocations_logged.add(node_id)
            reason = record.get("reason", "")
            site = self.ledger.site_name(node_id)
            log.warning("round %d: %s's node key was revoked (%s)", server_round, site, reason)
            self.audit.append(
                "node-revoked",
                round=server_round,
                site=site,
                node_id=node_id,
                revoked_at=record.get("revoked_at"),
                reason=reason,
            )

    @property
    def _stops_on_heldout(self) -> bool:
        return (
            self.evaluate is not None
            and self.early_stopping is not None
            and self.early_stopping.enabled
            and self.early_stopping.monitor == HELDOUT_MONITOR
        )

    def _heldout_due(self, server_round: int, stopping: bool) -> bool:
        """Whether the held-out set is scored this round: every ``heldout_every`` rounds and the final model."""
        if self.evaluate is None:
            return False
        periodic = self.heldout_every > 0 and server_round % self.heldout_every == 0
        return periodic or stopping or server_round == self.final_round

    def _write_round_clock(self, server_round: int, close_started: float) -> None:
        """``round_wall_s`` and ``round_close_s``, timed here in the ServerApp (not from Flower's log stream).

        ``round_wall_s``: from the end of the previous round's close to the start of this one's,
        i.e. sampling, messages, the sites' work and aggregation; ``round_close_s``: this close
        (held-out scoring, audit entry, resume state). Round 0 has only its close.
        """
        now = time.perf_counter()
        clock = {"round_close_s": now - close_started}
        if self._last_close_end is not None:
            clock["round_wall_s"] = close_started - self._last_close_end
        self._last_close_end = now
        self.writer.add_metrics(round=server_round, scope=GLOBAL_SCOPE, split="train", metrics=clock)

    def monitored_dice(self, server_round: int, test_metrics: MetricRecord | None) -> float:
        """The monitored mean Dice: held-out or the sites' weighted validation (NaN when not measured)."""
        if self.early_stopping is not None and self.early_stopping.monitor == HELDOUT_MONITOR:
            return mean_dice(plain_metrics(test_metrics)) if test_metrics is not None else float("nan")
        plan = self.ledger.plan(server_round, "evaluate")
        try:
            return mean_dice(plan.aggregated) if plan is not None and plan.aggregated else float("nan")
        except KeyError:  # the sites' replies had no Dice
            return float("nan")

    def _should_stop(self, server_round: int, test_metrics: MetricRecord | None) -> bool:
        if self.early_stopping is None or server_round == 0:  # round 0 is the untrained model
            return False
        stop = self.early_stopping.update(server_round, self.monitored_dice(server_round, test_metrics))
        if self.evaluate_config is not None and self.early_stopping.enabled:
            # Without a gain next round the run ends there: sites then score what belongs to a final round.
            self.evaluate_config[MAY_BE_LAST_ROUND_KEY] = self.early_stopping.next_round_may_stop
        return stop

    def _stopping_state(self) -> dict:
        return {"early_stopping": self.early_stopping.state_dict()} if self.early_stopping is not None else {}

    def write_site_rows(self, server_round: int) -> None:
        """Each sound site reply of the round as metrics.csv rows (once per round)."""
        if server_round in self._rows_written:
            return
        self._rows_written.add(server_round)
        for scope, split, metrics in self.ledger.site_rows(server_round):
            self.writer.add_metrics(round=server_round, scope=scope, split=split, metrics=metrics)

    def write_unfinished_round(self) -> None:
        """A run that stopped mid-round still leaves the rows of the replies it got."""
        self.write_site_rows((self.last_round if self.last_round is not None else self.round_offset) + 1)

    def _close(self, server_round: int) -> None:
        """End the run when no site returned an update; the round's simulated time as a global row."""
        closed = self.ledger.close_round(server_round)
        if closed is not None:
            seconds, total = closed
            self.writer.add_metrics(
                round=server_round,
                scope=GLOBAL_SCOPE,
                split="train",
                metrics={"simulated_round_s": seconds, "simulated_time_s": total},
            )

    def _write_global_validation(self, server_round: int) -> None:
        plan = self.ledger.plan(server_round, "evaluate")
        if plan is not None and plan.aggregated:
            self.writer.add_metrics(round=server_round, scope=GLOBAL_SCOPE, split="val", metrics=plan.aggregated)

    def round_entry(self, server_round: int, test_metrics: MetricRecord | None) -> dict:
        """Who was asked, who answered with what, who was rejected or failed and why, the config sent."""
        entry: dict = {}
        name = self.ledger.site_name
        for phase in ("train", "evaluate"):
            plan = self.ledger.plan(server_round, phase)
            if plan is None:
                continue
            replies = self.ledger.replies_of(server_round, phase)
            sound = [reply for reply in replies if reply.error is None]
            section = {
                "asked": sorted(name(node_id) for node_id in plan.asked),
                "answered": sorted(
                    {name(r.node_id) for r in replies if r.error is None or r.error.startswith("rejected")}
                ),
                "failed": {name(r.node_id): r.error for r in replies if r.error and not r.error.startswith("rejected")},
                "config": plain_config(plan.config),
            }
            if phase == "train":
                section["rejected"] = {
                    name(r.node_id): r.error.removeprefix("rejected: ")
                    for r in replies
                    if r.error and r.error.startswith("rejected")
                }
                section["updates"] = {
                    reply.site_id: {
                        "num_examples": int(reply.metrics.get(NUM_EXAMPLES_KEY, 0)),
                        "update_norm": reply.update_norm,
                        "data_manifest_sha256": reply.data_manifest_sha256,
                    }
                    for reply in sound
                }
            entry[phase] = section
        if test_metrics is not None:
            entry["heldout_test"] = plain_metrics(test_metrics)
        if (privacy := round_privacy(self.strategy, server_round)) is not None:
            entry["privacy"] = privacy  # client-level DP: epsilon spent so far at dp-delta
        return entry

    def _write_manifests(self) -> None:
        manifests = {site: {"sha256": hashes[-1], "all_seen": hashes} for site, hashes in self.ledger.manifests.items()}
        if manifests:
            self.writer.write_json(MANIFESTS_FILE, dict(sorted(manifests.items())))


def plain_config(config) -> dict:
    """A round's ConfigRecord as JSON values (numbers, strings, bools; lists kept)."""
    return {
        key: value if isinstance(value, (bool, int, float, str, list)) else str(value) for key, value in config.items()
    }
