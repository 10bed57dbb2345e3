"""EarlyStopping on scripted score sequences: the round it stops at, min-delta, patience 0, NaN, resume."""

import math

import pytest

from fedtumor.run.early_stopping import EarlyStopping


def stop_round(stopper: EarlyStopping, scores: list[float]) -> int | None:
    """The first round (from 1) after which ``stopper`` says stop; None when it never does."""
    for server_round, score in enumerate(scores, start=1):
        if stopper.update(server_round, score):
            return server_round
    return None


@pytest.mark.parametrize(
    ("patience", "scores", "expected"),
    [
        (1, [0.1, 0.2, 0.2], 3),  # round 3 does not beat round 2
        (2, [0.1, 0.3, 0.2, 0.25, 0.4], 4),  # two rounds below round 2's best
        (2, [0.1, 0.3, 0.2, 0.4, 0.35, 0.5], None),  # every dip is followed by a new best
        (3, [0.5, 0.4, 0.3, 0.2], 4),  # falling from round 1: stops at 1 + 3
        (1, [0.1], None),
    ],
)
def test_stops_after_patience_rounds_without_a_new_best(patience, scores, expected):
    stopper = EarlyStopping(patience)
    assert stop_round(stopper, scores) == expected
    if expected is not None:
        best = max(range(expected), key=lambda i: scores[i]) + 1
        assert stopper.report() == {"round": expected, "best_round": best, "reason": stopper.reason}
    else:
        assert stopper.report() is None


def test_min_delta_makes_small_gains_count_as_no_improvement():
    scores = [0.30, 0.305, 0.309, 0.40]
    assert stop_round(EarlyStopping(2, min_delta=0.01), scores) == 3  # +0.005 and +0.009 do not count
    assert stop_round(EarlyStopping(2, min_delta=0.0), scores) is None
    exactly = EarlyStopping(1, min_delta=0.25)
    assert stop_round(exactly, [0.25, 0.5]) == 2  # a gain must be more than min-delta, not equal to it
    assert "> 0.25 for 1 rounds" in exactly.reason


def test_patience_zero_never_stops():
    stopper = EarlyStopping(0)
    assert not stopper.enabled
    assert stop_round(stopper, [0.9, 0.1, float("nan"), 0.0] * 5) is None


def test_a_nan_score_is_a_round_without_improvement():
    assert stop_round(EarlyStopping(2), [0.2, float("nan"), float("nan")]) == 3
    stopper = EarlyStopping(2)
    assert stop_round(stopper, [float("nan"), 0.1, float("nan"), 0.2]) is None
    assert stopper.best == 0.2 and stopper.best_round == 4
    assert stop_round(EarlyStopping(1), [float("nan")]) == 1  # never a score to improve on


@pytest.mark.parametrize(
    ("patience", "min_delta"), [(-1, 0.0), (1.5, 0.0), (True, 0.0), (1, -0.1), (1, math.inf), (1, math.nan)]
)
def test_bad_settings_are_refused(patience, min_delta):
    with pytest.raises(ValueError, match="patience|min_delta"):
        EarlyStopping(patience, min_delta)


def test_state_dict_resumes_the_count_where_it_was():
    scores = [0.1, 0.3, 0.2, 0.2, 0.25, 0.1]
    uninterrupted = stop_round(EarlyStopping(3, monitor="held-out mean Dice"), scores)
    first = EarlyStopping(3)
    assert stop_round(first, scores[:3]) is None
    resumed = EarlyStopping(3)
    resumed.load_state_dict(first.state_dict())
    later = next(r for r, s in enumerate(scores[3:], start=4) if resumed.update(r, s))
    assert later == uninterrupted == 5
    assert resumed.report()["best_round"] == 2
    fresh = EarlyStopping(3)
    fresh.load_state_dict({})  # a resume state written without early stopping
    assert fresh.state_dict() == EarlyStopping(3).state_dict()
