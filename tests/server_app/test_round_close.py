"""RoundClose with early stopping: the monitored Dice, the round it ends the run at, the resume state."""

import json

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedtumor.core.config import RunConfig
from fedtumor.federation.conformance import as_serverapp, site_reply
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.registry import build_strategy
from fedtumor.federation.summary import run_summary
from fedtumor.run.audit import AuditLog
from fedtumor.run.early_stopping import HELDOUT_MONITOR, VALIDATION_MONITOR, EarlyStopping
from fedtumor.run.resume import load_resume_state
from fedtumor.run.writer import RunWriter
from fedtumor.security.revocations import read_revocations, record_revocation, revocation_register
from server_app.round_close import EarlyStop, RoundClose
from tests.strategies.replies import Grid

PATCHES = {1: 6, 2: 10}  # node -> training patches it reports each round


@pytest.fixture(autouse=True)
def serverapp_identity():
    with as_serverapp():
        yield


def train_round(strategy, flower_round: int) -> ArrayRecord:
    received = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    replies = []
    for message in strategy.configure_train(flower_round, received, ConfigRecord(), Grid(PATCHES)):
        node = message.metadata.dst_node_id
        metrics = MetricRecord({"num-examples": 2, "num-patches": PATCHES[node]})
        arrays = ArrayRecord({"w": Array(np.full(4, 0.1 * flower_round, np.float32))})
        site = ConfigRecord({"site-id": f"site-{node}"})
        replies.append(site_reply(node, RecordDict({"arrays": arrays, "metrics": metrics, "site": site})))
    aggregated, _ = strategy.aggregate_train(flower_round, replies)
    return aggregated


def dice(value: float) -> dict[str, float]:
    return {"dice_et": value, "dice_tc": value, "dice_wt": value}


def closer(tmp_path, heldout: list[float] | None, stopper: EarlyStopping | None, ledger: SiteLedger):
    strategy = build_strategy(RunConfig(min_available_nodes=1, min_train_replies=1), ledger=ledger)
    writer, audit = RunWriter(tmp_path / "run"), AuditLog(tmp_path / "run")
    evaluate = None
    if heldout is not None:

        def evaluate(server_round, _arrays):
            return MetricRecord(dice(heldout[server_round]))

    close = RoundClose(strategy, writer, ledger, audit, evaluate, extra_state=lambda: {}, early_stopping=stopper)
    return strategy, close


def run_rounds(strategy, close: RoundClose, rounds: int) -> dict | None:
    """Flower's loop: evaluate_fn(0), then train and close each round; the EarlyStop report or None."""
    close(0, ArrayRecord({"w": Array(np.zeros(4, np.float32))}))
    try:
        for flower_round in range(1, rounds + 1):
            close(flower_round, train_round(strategy, flower_round))
    except EarlyStop as stop:
        return stop.report
    return None


def test_held_out_dice_ends_the_run_after_patience_rounds_and_the_round_is_fully_closed(tmp_path):
    heldout = [0.0, 0.2, 0.4, 0.39, 0.41, 0.9, 0.9]  # index = round; round 0 is the untrained model
    ledger = SiteLedger()
    strategy, close = closer(tmp_path, heldout, EarlyStopping(2, 0.05, HELDOUT_MONITOR), ledger)
    report = run_rounds(strategy, close, rounds=len(heldout) - 1)
    assert report == {"round": 4, "best_round": 2, "reason": "no improvement of held-out mean Dice > 0.05 for 2 rounds"}
    assert close.last_round == 4  # the final model is the stop round's
    saved = load_resume_state(close.writer.run_dir)
    assert saved.round == 4 and saved.recorder["early_stopping"]["best_round"] == 2
    assert run_summary(ledger, RunConfig(), 2, 1.0, {})["patches_seen"] == 4 * sum(PATCHES.values())


def test_without_held_out_scores_the_weighted_validation_dice_is_monitored(tmp_path):
    ledger = SiteLedger()
    strategy, close = closer(tmp_path, None, EarlyStopping(1, monitor=VALIDATION_MONITOR), ledger)
    for server_round, value in enumerate([0.3, 0.5, 0.5], start=1):
        ledger.plan_evaluate(server_round, [1, 2], {})
        ledger.record_aggregated(server_round, {**dice(value), "num-examples": 4})
    assert run_rounds(strategy, close, rounds=3)["round"] == 3
    assert close.monitored_dice(3, None) == pytest.approx(0.5)


def test_each_round_is_timed_inside_the_serverapp_apart_from_its_close(tmp_path):
    strategy, close = closer(tmp_path, [0.0, 0.1, 0.2, 0.3], None, SiteLedger())
    run_rounds(strategy, close, rounds=3)
    metrics = pd.read_csv(close.writer.run_dir / "metrics.csv").query("scope == 'global' and split == 'train'")
    clock = metrics.pivot_table(index="round", columns="metric", values="value")
    assert clock["round_close_s"].notna().all() and sorted(clock.index) == [0, 1, 2, 3]
    assert clock["round_wall_s"].isna().tolist() == [True, False, False, False]  # round 0 is no round
    assert (clock["round_wall_s"].dropna() > 0).all()


def test_the_validation_monitor_ignores_held_out_scores_so_the_test_set_never_picks_the_round(tmp_path):
    heldout = [0.0, 0.2, 0.4, 0.6, 0.8]  # rising: a held-out monitor would never stop
    ledger = SiteLedger()
    strategy, close = closer(tmp_path, heldout, EarlyStopping(2, monitor=VALIDATION_MONITOR), ledger)
    for server_round, value in enumerate([0.3, 0.5, 0.45, 0.44], start=1):
        ledger.plan_evaluate(server_round, [1, 2], {})
        ledger.record_aggregated(server_round, {**dice(value), "num-examples": 4})
    report = run_rounds(strategy, close, rounds=4)
    assert report["round"] == 4 and report["best_round"] == 2
    assert close.monitored_dice(4, MetricRecord(dice(0.8))) == pytest.approx(0.44)


def test_sites_are_told_when_the_next_round_may_be_the_last_so_personal_models_are_scored_on_held_out(tmp_path):
    heldout = [0.0, 0.2, 0.4, 0.39, 0.5, 0.45, 0.44]
    strategy, close = closer(tmp_path, heldout, EarlyStopping(2, monitor=HELDOUT_MONITOR), SiteLedger())
    close.evaluate_config = ConfigRecord()
    flags = []
    close(0, ArrayRecord({"w": Array(np.zeros(4, np.float32))}))
    with pytest.raises(EarlyStop):
        for flower_round in range(1, len(heldout)):
            close(flower_round, train_round(strategy, flower_round))
            flags.append(close.evaluate_config["may-be-last-round"])
    # after rounds 1-6: a gain resets the wait; one round without a gain leaves the next as the possible last
    assert flags == [False, False, True, False, True]


def test_patience_zero_or_none_uses_every_round_and_a_resumed_stopper_continues(tmp_path):
    heldout = [0.0, 0.5, 0.4, 0.3, 0.2]
    for stopper in (None, EarlyStopping(0)):
        strategy, close = closer(tmp_path / str(stopper), heldout, stopper, SiteLedger())
        assert run_rounds(strategy, close, rounds=4) is None and close.last_round == 4

    strategy, close = closer(tmp_path / "first", heldout, EarlyStopping(3, monitor=HELDOUT_MONITOR), SiteLedger())
    assert run_rounds(strategy, close, rounds=2) is None  # interrupted after round 2: one round without gain
    restored = EarlyStopping(3)
    restored.load_state_dict(load_resume_state(close.writer.run_dir).recorder["early_stopping"])
    assert (restored.wait, restored.best_round) == (1, 1)
    assert [restored.update(r, heldout[r]) for r in (3, 4)] == [False, True]  # stops at 1 + 3, as uninterrupted


def scored_rounds(tmp_path, heldout_every: int, last_round: int, validation: list[float], patience: int):
    """The rounds whose held-out set RoundClose scored, on a scripted validation sequence."""
    ledger, asked = SiteLedger(), []
    stopper = EarlyStopping(patience, monitor=VALIDATION_MONITOR) if patience else None
    strategy, close = closer(tmp_path, None, stopper, ledger)
    close.evaluate = lambda server_round, _arrays: asked.append(server_round) or MetricRecord(dice(0.5))
    close.heldout_every, close.final_round = heldout_every, last_round
    for server_round, value in enumerate(validation, start=1):
        ledger.plan_evaluate(server_round, [1, 2], {})
        ledger.record_aggregated(server_round, {**dice(value), "num-examples": 4})
    report = run_rounds(strategy, close, rounds=last_round)
    return asked, report


def test_server_eval_every_scores_the_held_out_set_periodically_and_always_the_final_model(tmp_path):
    rising = [0.1 * r for r in range(1, 8)]
    assert scored_rounds(tmp_path / "a", 1, 5, rising, 0)[0] == [0, 1, 2, 3, 4, 5]
    assert scored_rounds(tmp_path / "b", 2, 5, rising, 0)[0] == [0, 2, 4, 5]  # 5: the last round
    assert scored_rounds(tmp_path / "c", 0, 5, rising, 0)[0] == [5]  # the final model only
    # An early stop on validation: the stop round's model is the final one, and it is scored.
    asked, report = scored_rounds(tmp_path / "d", 0, 7, [0.3, 0.5, 0.45, 0.44, 0.9, 0.9, 0.9], 2)
    assert report["round"] == 4 and asked == [4]
    lines = (tmp_path / "d" / "run" / "audit.jsonl").read_text().splitlines()
    entries = [e for e in map(json.loads, lines) if e["event"] == "round"]
    assert ["heldout_test" in e for e in entries] == [False] * 4 + [True]


def test_a_node_the_centre_revoked_gets_one_audit_entry_naming_its_site(tmp_path):
    register = revocation_register(tmp_path / "home")
    strategy, close = closer(tmp_path, None, None, SiteLedger())
    close.revocations = lambda: read_revocations(register)
    record_revocation(register, 99, "a node of another federation")  # not this run's: ignored
    close(0, ArrayRecord({"w": Array(np.zeros(4, np.float32))}))
    close(1, train_round(strategy, 1))
    record_revocation(register, 2, "key leaked")
    for flower_round in (2, 3):
        close(flower_round, train_round(strategy, flower_round))
    entries = [json.loads(line) for line in (close.writer.run_dir / "audit.jsonl").read_text().splitlines()]
    revoked = [e for e in entries if e["event"] == "node-revoked"]
    assert [(e["round"], e["site"], e["node_id"], e["reason"]) for e in revoked] == [(2, "site-2", 2, "key leaked")]
