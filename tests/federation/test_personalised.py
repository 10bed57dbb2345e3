"""summary.json's personalised section from the ledger's evaluate replies."""

import pytest

from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.personalised import NOT_MEASURED, personalised_summary
from fedtumor.federation.replies import SiteReply


def scores(dice: float, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}dice_{region}": dice for region in ("et", "tc", "wt")}


def test_sites_global_and_personal_scores_and_their_weighted_means():
    ledger = SiteLedger()
    ledger.record(SiteReply(1, "evaluate", 1, "site-1", {"num-examples": 1, **scores(0.1), **scores(0.2, "personal_")}))
    ledger.record(SiteReply(2, "evaluate", 1, "site-1", {"num-examples": 1, **scores(0.3), **scores(0.6, "personal_")}))
    ledger.record(SiteReply(2, "evaluate", 2, "site-2", {"num-examples": 3, **scores(0.5), **scores(0.8, "personal_")}))
    ledger.record_test(2, scores(0.4))
    section = personalised_summary(ledger)
    assert section["sites"]["site-1"]["round"] == 2  # its latest evaluation
    assert section["sites"]["site-1"]["personal_val"]["mean_dice"] == pytest.approx(0.6)
    assert section["mean"]["global_val"]["dice_et"] == (0.3 * 1 + 0.5 * 3) / 4
    assert section["mean"]["personal_val"]["dice_wt"] == (0.6 * 1 + 0.8 * 3) / 4
    assert section["mean"]["personal_heldout"] is None and section["personal_heldout"] == NOT_MEASURED
    assert section["global_heldout"]["mean_dice"] == pytest.approx(0.4)


def test_held_out_personal_scores_are_plain_means_over_sites():
    ledger = SiteLedger()
    for node, (weight, dice) in enumerate([(1, 0.2), (5, 0.6)], start=1):
        metrics = {
            "num-examples": weight,
            **scores(0.0),
            **scores(0.0, "personal_"),
            **scores(dice, "personal_heldout_"),
        }
        ledger.record(SiteReply(3, "evaluate", node, f"site-{node}", metrics))
    section = personalised_summary(ledger)
    assert section["personal_heldout"] == "measured"
    assert section["mean"]["personal_heldout"]["dice_tc"] == (0.2 + 0.6) / 2


def test_no_personal_model_no_section():
    ledger = SiteLedger()
    ledger.record(SiteReply(1, "evaluate", 1, "site-1", {"num-examples": 2, **scores(0.5)}))
    assert personalised_summary(ledger) is None
