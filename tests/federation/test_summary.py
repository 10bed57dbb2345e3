"""summary.json from the run's ledger: a completed run's, and a failed run's with why and where it stopped."""

from fedtumor.core.config import RunConfig
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.replies import SiteReply
from fedtumor.federation.summary import run_summary

SCORES = {"dice_et": 0.2, "dice_tc": 0.3, "dice_wt": 0.4, "hd95_et": 9.0, "hd95_tc": 8.0, "hd95_wt": 7.0}


def ledger_after_one_round() -> SiteLedger:
    ledger = SiteLedger()
    ledger.record(SiteReply(1, "train", 11, "site-1", {"num-examples": 3.0, "loss": 0.5}))
    ledger.record(SiteReply(2, "train", 12, "site-2", error="site site-2: subject S1: S1/S1_t1.nii.gz: truncated"))
    ledger.record_test(0, {name: value / 2 for name, value in SCORES.items()})
    ledger.record_test(1, SCORES)
    return ledger


def test_a_completed_run_says_so_and_nothing_of_a_failure():
    summary = run_summary(ledger_after_one_round(), RunConfig(), 2, wall_time_s=1.234, strategy_parameters={})
    assert summary["status"] == "completed"
    assert "error" not in summary and "last_completed_round" not in summary
    assert summary["final"]["round"] == 1 and summary["best"] == {"round": 1, "mean_dice": 0.3}


def test_a_failed_run_keeps_what_its_completed_rounds_gave():
    error = "RoundFailedError: round 2: 0 of 1 sites returned a usable update,\nmin-train-replies needs 1"
    ledger = ledger_after_one_round()
    summary = run_summary(
        ledger, RunConfig(), 2, wall_time_s=1.0, strategy_parameters={}, error=error, last_completed_round=1
    )
    completed = run_summary(ledger, RunConfig(), 2, wall_time_s=1.0, strategy_parameters={})
    assert summary["status"] == "failed" and summary["last_completed_round"] == 1
    assert summary["error"] == " ".join(error.split())  # one line
    assert summary["sites"] == {"site-1": 3.0} and summary["final"] == completed["final"]
    assert [(f["round"], f["site"]) for f in summary["failed_replies"]] == [(2, "site-2")]
    assert {k: v for k, v in summary.items() if k not in ("status", "error", "last_completed_round")} == {
        k: v for k, v in completed.items() if k != "status"
    }


def test_a_run_that_failed_before_any_round_has_no_scores():
    summary = run_summary(
        SiteLedger(), RunConfig(), 2, wall_time_s=0.5, strategy_parameters={}, error="boom", last_completed_round=None
    )
    assert summary["status"] == "failed" and summary["last_completed_round"] is None
    assert summary["sites"] == {} and "final" not in summary and "best" not in summary
