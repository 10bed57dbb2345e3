"""The study's statistics: bootstrap intervals over seeds and subjects, paired comparisons, run-folder readers."""

import json

import numpy as np
import pytest

from fedtumor.bench.compare import RunRecord, comparison_rows
from fedtumor.bench.study_records import mean_over_site_models, personal_scores, site_validation_dice
from fedtumor.bench.study_report import best_federated, paired_rows, personalised_rows
from fedtumor.bench.study_stats import bootstrap_ci, bootstrap_means, paired_comparison, score_matrix
from fedtumor.run.writer import RunWriter


def subjects(values: list[float]) -> dict[str, dict[str, float]]:
    return {
        f"S{i:02d}": {"dice_et": v, "dice_tc": v, "dice_wt": v, "hd95_et": 1.0, "hd95_tc": 1.0, "hd95_wt": 1.0}
        for i, v in enumerate(values)
    }


def test_the_interval_holds_the_mean_narrows_with_more_subjects_and_is_the_same_on_every_run():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.7, 0.1, (3, 8)), rng.normal(0.7, 0.1, (3, 128))
    low, high = bootstrap_ci(small)
    assert low < small.mean() < high
    assert bootstrap_ci(small) == (low, high)  # seeded resampling
    large_low, large_high = bootstrap_ci(large)
    assert large_high - large_low < high - low
    # A constant matrix has no spread: the interval collapses onto the value.
    assert bootstrap_ci(np.full((3, 5), 0.25)) == pytest.approx((0.25, 0.25))


def test_resampling_draws_seeds_as_well_as_subjects():
    # Every subject agrees within a seed; the seeds differ. Resampling subjects alone would give
    # 0.5 every time: the seeds' spread must show in the resampled means.
    scores = np.array([[0.2] * 6, [0.8] * 6])
    means = bootstrap_means(scores, samples=400)
    assert set(np.round(means, 6)) == {0.2, 0.5, 0.8}
    with pytest.raises(ValueError, match="seeds x subjects"):
        bootstrap_means(np.empty((0, 3)))


def test_paired_comparison_gives_the_signed_mean_difference_and_a_small_p_for_a_consistent_gain():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.6, (3, 16))
    better = base + 0.1 + rng.normal(0, 0.01, base.shape)
    result = paired_comparison(better, base)
    assert result["mean_difference"] == pytest.approx(0.1, abs=0.01)
    assert 0.0 < result["ci_low"] < 0.1 < result["ci_high"]
    assert result["wilcoxon_p"] < 0.001 and (result["seeds"], result["subjects"]) == (3, 16)
    assert paired_comparison(base, better)["mean_difference"] == pytest.approx(-result["mean_difference"])
    with pytest.raises(ValueError, match="same seeds x subjects"):
        paired_comparison(base, base[:, :4])


def test_score_matrix_keeps_only_subjects_every_seed_scored_in_one_order():
    per_seed = {1: subjects([0.1, 0.2, 0.3]), 0: {"S02": subjects([0, 0, 0.9])["S02"], **subjects([0.5])}}
    assert score_matrix(per_seed, "dice_et").tolist() == [[0.5, 0.9], [0.1, 0.3]]  # seeds 0, 1; S00, S02


def test_rows_carry_intervals_stop_rounds_and_the_paired_and_personalised_tables():
    def record(method, seed, values, **extra):
        per = subjects(values)
        final = {m: float(np.mean([s[m] for s in per.values()])) for m in per["S00"]}
        return RunRecord(method, seed, "", 1.0, True, final=final, per_subject=per, **extra)

    records = []
    for seed in (0, 1):
        records += [
            record("pooled", seed, [0.8, 0.9, 0.85, 0.8], stop_round=10 + seed),
            record("local", seed, [0.3, 0.2, 0.4, 0.3], site_val_dice=0.5),
            record("fedavg", seed, [0.7, 0.8, 0.8, 0.75], stop_round=20, site_val_dice=0.6),
            record("fedprox", seed, [0.6, 0.7, 0.7, 0.65], stop_round=18),
            RunRecord(
                "ditto", seed, "", 1.0, True, final={}, personal={"global_val": 0.6, "personal_val": 0.7 + seed / 10}
            ),
        ]
    rows = {row["method"]: row for row in comparison_rows([r for r in records if r.method != "ditto"])}
    assert rows["pooled"]["stop_rounds"] == [10, 11]
    low, high = rows["fedavg"]["mean_dice_ci"]
    assert low <= rows["fedavg"]["mean_dice"] <= high and high - low > 0
    assert best_federated(records) == "fedavg"
    paired = {(row["first"], row["second"]): row for row in paired_rows(records)}
    assert set(paired) == {("fedavg", "local"), ("fedavg", "pooled")}
    assert paired[("fedavg", "local")]["mean_difference"] == pytest.approx(0.7625 - 0.3)
    personal = {row["method"]: row for row in personalised_rows(records)}
    assert personal["ditto"]["personal_val"] == pytest.approx(0.75) and personal["ditto"]["global_val"] == 0.6
    assert personal["local"]["personal_val"] == 0.5 and personal["local"]["global_val"] is None
    assert personal["fedavg"]["global_val"] == 0.6 and personal["fedavg"]["personal_val"] is None


def test_run_folder_readers_average_site_models_and_weight_site_validation(tmp_path):
    a, b = subjects([0.2, 0.4]), subjects([0.6, 0.8])
    mean = mean_over_site_models([a, b])
    assert mean["S00"]["dice_et"] == pytest.approx(0.4) and mean["S01"]["dice_wt"] == pytest.approx(0.6)
    local = {"per_site_val": {"site-1": {"mean_dice": 0.2, "num_val": 3}, "site-2": {"mean_dice": 0.6, "num_val": 1}}}
    assert site_validation_dice(tmp_path, local) == pytest.approx((0.2 * 3 + 0.6) / 4)
    writer = RunWriter(tmp_path / "fed")
    for server_round, value in ((3, 0.5), (4, 0.55)):
        writer.add_metrics(round=server_round, scope="global", split="val", metrics=subjects([value])["S00"])
    summary = {"stopped_early": {"round": 3}, "final": {"round": 3}}
    assert site_validation_dice(tmp_path / "fed", summary) == pytest.approx(0.5)  # the stop round's
    fine_tuned = json.loads(json.dumps({"baseline": "fedavg-ft", "mean": {"personal_val": {"mean_dice": 0.9}}}))
    assert personal_scores(fine_tuned) == {"global_val": None, "personal_val": 0.9, "personal_heldout": None}
    assert personal_scores({"final": {}}) is None
