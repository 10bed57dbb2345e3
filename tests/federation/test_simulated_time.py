"""Simulated time and the FeTS Task 1 convergence score, with hand-computed expectations."""

import json

import pytest

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import DataError
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.replies import SiteReply
from fedtumor.federation.simulated_time import (
    DOWNLOAD_MBPS_RANGE,
    ONE_WEEK_S,
    SECONDS_PER_SAMPLE_RANGE,
    SiteProfile,
    SiteProfiles,
    convergence_score,
    cumulative_times,
    load_profiles_csv,
    round_duration,
    seeded_profile,
)
from fedtumor.federation.summary import run_summary

MB = 1_000_000  # bytes
HEADER = "site_id,seconds_per_sample,download_mbps,upload_mbps\n"


def test_round_lasts_as_long_as_its_slowest_site():
    # 25 MB = 200 Mbit down and up.
    a = SiteProfile(seconds_per_sample=2.0, download_mbps=100, upload_mbps=50)  # 2 + 100*2 + 4 = 206
    b = SiteProfile(seconds_per_sample=1.0, download_mbps=8, upload_mbps=8)  # 25 + 150*1 + 25 = 200
    c = SiteProfile(seconds_per_sample=0.5, download_mbps=10, upload_mbps=2)  # 20 + 300*0.5 + 80/2 = 210
    seconds = {
        "a": a.round_seconds(25 * MB, 100, 25 * MB),
        "b": b.round_seconds(25 * MB, 150, 25 * MB),
        "c": c.round_seconds(25 * MB, 300, 10 * MB),
    }
    assert seconds == pytest.approx({"a": 206.0, "b": 200.0, "c": 210.0})
    assert round_duration(seconds.values()) == pytest.approx(210.0)
    assert round_duration(seconds[k] for k in ("a", "b")) == pytest.approx(206.0)
    assert round_duration([]) == 0.0
    assert cumulative_times([206.0, 210.0]) == [0.0, 206.0, 416.0]


def test_convergence_score_of_a_hand_made_curve():
    times = [0, 100, 300, 600]
    dice = [0.1, 0.5, 0.4, 0.7]  # round 2 is worse: 0.5 holds until round 3's improvement
    # 0.1*100 + 0.5*200 + 0.5*300 + 0.7*(1000-600) = 10 + 100 + 150 + 280 = 540
    assert convergence_score(times, dice, 1000) == pytest.approx(0.54)
    # The running best gives the same score as the raw values.
    assert convergence_score(times, [0.1, 0.5, 0.5, 0.7], 1000) == pytest.approx(0.54)


def test_convergence_score_is_cut_at_the_budget():
    times = [0, 100, 300, 600]
    dice = [0.1, 0.5, 0.4, 0.7]
    # Budget 400: 0.1*100 + 0.5*200 + 0.5*100; round 3 (at 600 s) comes too late to count.
    assert convergence_score(times, dice, 400) == pytest.approx(160 / 400)
    # Budget 50: only the initial model's 0.1 over 50 s.
    assert convergence_score(times, dice, 50) == pytest.approx(0.1)


def test_convergence_score_holds_the_last_value_flat_to_the_budget():
    assert convergence_score([0.0], [0.2], 10.0) == pytest.approx(0.2)
    # A run finished after 1 s at Dice 0.8 scores almost 0.8 of a week.
    assert convergence_score([0.0, 1.0], [0.0, 0.8]) == pytest.approx(0.8 * (ONE_WEEK_S - 1) / ONE_WEEK_S)
    # NaN is no improvement; the curve starts at 0.
    assert convergence_score([0, 50], [float("nan"), 0.5], 100) == pytest.approx(0.25)


def test_convergence_score_rejects_bad_input():
    with pytest.raises(ValueError, match="non-decreasing"):
        convergence_score([0, 10, 5], [0.1, 0.2, 0.3], 100)
    with pytest.raises(ValueError, match="length"):
        convergence_score([0, 10], [0.1], 100)
    with pytest.raises(ValueError, match="budget_s"):
        convergence_score([0], [0.1], 0)
    assert convergence_score([], [], 100) == 0.0


def test_seeded_profiles_are_deterministic_and_differ_per_site():
    first = [seeded_profile(f"site-{i}") for i in range(1, 9)]
    again = [seeded_profile(f"site-{i}") for i in range(1, 9)]
    assert first == again
    assert len({p.seconds_per_sample for p in first}) == len(first)
    assert len({p.download_mbps for p in first}) == len(first)
    for profile in first:
        assert SECONDS_PER_SAMPLE_RANGE[0] <= profile.seconds_per_sample <= SECONDS_PER_SAMPLE_RANGE[1]
        assert DOWNLOAD_MBPS_RANGE[0] <= profile.download_mbps <= DOWNLOAD_MBPS_RANGE[1]
        assert 0.25 * profile.download_mbps <= profile.upload_mbps <= profile.download_mbps
    # Keyed by site id alone: the lookup object does not matter.
    assert SiteProfiles()["site-3"] == first[2]
    assert SiteProfiles.from_setting("")["site-3"] == first[2]


def test_profiles_csv_is_read(tmp_path):
    path = tmp_path / "profiles.csv"
    path.write_text(HEADER + "site-1,2.5,100,40\nsite-2,6,20,10\n\n")
    profiles = SiteProfiles.from_setting(str(path))
    assert profiles["site-1"] == SiteProfile(2.5, 100.0, 40.0)
    assert profiles["site-2"] == SiteProfile(6.0, 20.0, 10.0)
    with pytest.raises(DataError, match=r"^.*profiles\.csv: site site-3 has no row in the site-profiles file$"):
        profiles["site-3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "site_id,seconds_per_sample,download_mbps\nsite-1,2,3\n",
            "header is site_id,seconds_per_sample,download_mbps",
        ),
        (HEADER + "site-1,2,3,4\nsite-2,fast,3,4\n", "row 3: seconds"),
        (HEADER + "site-1,2,3,-4\n", "row 2: upload_mbps must be a positive number"),
        (HEADER + "site-1,2,3,0\n", "row 2: upload_mbps must be a positive number"),
        (HEADER + "site-1,2,nan,4\n", "row 2: download_mbps must be"),
        (HEADER + "site-1,2,3\n", "row 2 has 3 fields, expected 4"),
        (HEADER + ",2,3,4\n", "row 2 has an empty site_id"),
        (HEADER + "a,2,3,4\na,2,3,4\n", "row 3: site a appears twice"),
        ("", "empty"),
        (HEADER, "no sites"),
    ],
)
def test_bad_profiles_csv_is_named_in_one_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        load_profiles_csv(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_profiles_csv_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: site-profiles file does not exist"):
        SiteProfiles.from_setting(str(tmp_path / "nope.csv"))


def train_reply(server_round: int, site_id: str, patches: int, node_id: int = 1) -> SiteReply:
    return SiteReply(
        server_round,
        "train",
        node_id,
        site_id,
        {"num-examples": 3.0, "num-patches": float(patches)},
        download_bytes=MB,  # 8 Mbit
        upload_bytes=MB,
    )


def test_the_ledger_keeps_simulated_time_and_the_summary_scores_it():
    profiles = SiteProfiles({"site-1": SiteProfile(1.0, 8, 8), "site-2": SiteProfile(2.0, 8, 8)})
    ledger = SiteLedger(profiles)
    dice = {0: 0.1, 1: 0.5, 2: 0.3}
    assert ledger.close_round(0) == (0.0, 0.0)  # the initial model
    ledger.record_test(0, {"dice_et": dice[0], "dice_tc": dice[0], "dice_wt": dice[0]})
    # Round 1: site-1 1 + 10*1 + 1 = 12 s; site-2 1 + 20*2 + 1 = 42 s -> 42 s.
    ledger.record(train_reply(1, "site-1", 10))
    ledger.record(train_reply(1, "site-2", 20, node_id=2))
    ledger.record(SiteReply(1, "train", 3, "node-3", error="boom"))  # adds no time
    assert ledger.close_round(1) == pytest.approx((42.0, 42.0))
    assert ledger.close_round(1) is None  # a round is closed once
    ledger.record_test(1, {"dice_et": 0.4, "dice_tc": 0.5, "dice_wt": 0.6})  # mean 0.5
    # Round 2: only site-1, 1 + 30 + 1 = 32 s -> 74 s in all.
    ledger.record(train_reply(2, "site-1", 30))
    assert ledger.close_round(2) == pytest.approx((32.0, 74.0))
    ledger.record_test(2, {"dice_et": dice[2], "dice_tc": dice[2], "dice_wt": dice[2]})

    rows = {scope: metrics["simulated_s"] for scope, split, metrics in ledger.site_rows(1) if split == "train"}
    assert rows == pytest.approx({"site-1": 12.0, "site-2": 42.0})  # the failed node has no row
    assert ledger.sites[2].simulated_s == pytest.approx(42.0)  # what fastest-first reads

    config = RunConfig(num_server_rounds=2, time_budget_s=100.0)
    summary = run_summary(ledger, config, n_nodes=3, wall_time_s=1.0, strategy_parameters={})
    assert summary["simulated_time_s"] == pytest.approx(74.0)
    assert summary["time_budget_s"] == 100.0
    # 0.1 over [0, 42), 0.5 over [42, 100): (4.2 + 29) / 100; round 2's worse model changes nothing.
    assert summary["convergence_score"] == pytest.approx(0.332)
    assert summary["sites"] == {"site-1": 3.0, "site-2": 3.0}
    assert [(f["round"], f["site"], f["error"]) for f in summary["failed_replies"]] == [(1, "node-3", "boom")]
    json.dumps(summary)  # plain JSON


def test_the_ledger_without_profiles_keeps_no_time():
    ledger = SiteLedger()
    ledger.record(train_reply(1, "site-1", 10))
    assert ledger.close_round(1) is None
    summary = run_summary(ledger, RunConfig(), n_nodes=1, wall_time_s=1.0, strategy_parameters={})
    assert "convergence_score" not in summary and "simulated_time_s" not in summary
    assert all("simulated_s" not in metrics for _, _, metrics in ledger.site_rows(1))


def test_a_round_without_any_update_ends_the_run_naming_why():
    ledger = SiteLedger()
    ledger.record(SiteReply(1, "train", 3, "node-3", error="site 3: bad file"))
    with pytest.raises(RuntimeError, match=r"round 1: no site returned a model update \(site 3: bad file\)"):
        ledger.close_round(1)
