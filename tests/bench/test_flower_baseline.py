"""The bare-Flower comparison's arithmetic on known clocks (the live run: test_bench_scripts.py, slow)."""

import pytest

from fedtumor.bench.flower_baseline import AppRun, comparison


def test_overhead_is_a_round_minus_its_training_and_the_targets_are_judged_on_it():
    bare = AppRun("bare Flower", True, "ok", 8.0, 40.0, round_s={1: 9.0, 2: 5.2, 3: 5.4, 4: 5.3},
                  training_s={1: 5.0, 2: 5.0, 3: 5.0, 4: 5.0})  # fmt: skip
    fedtumor = AppRun("fedtumor", True, "ok", 20.0, 80.0, round_s={1: 20.0, 2: 6.0, 3: 6.6, 4: 6.2},
                      training_s={1: 5.0, 2: 5.5, 3: 5.5, 4: 5.5})  # fmt: skip
    result = comparison(bare, fedtumor)
    assert bare.overhead_s == pytest.approx(0.3) and fedtumor.overhead_s == pytest.approx(0.7)  # medians
    assert result["measures"]["per_round_overhead_s"] == pytest.approx(0.4)
    assert result["measures"]["startup_ratio"] == pytest.approx(2.5)
    assert result["measures"]["first_round_ratio"] == pytest.approx(20.0 / 6.2)
    assert result["met"] == {"per_round_overhead_s": False, "startup_ratio": False, "first_round_ratio": False}
    assert result["apps"]["bare Flower"]["steady_round_s"] == pytest.approx(5.3)
