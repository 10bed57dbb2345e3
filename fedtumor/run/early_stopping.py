"""Early stopping on a score that should rise (the mean Dice), round by round.

Run-config keys ``early-stopping-patience`` (rounds without improvement before the run ends;
0 turns it off), ``early-stopping-min-delta`` (an improvement must beat the best so far by
more than this) and ``early-stopping-monitor``: ``validation`` watches the sites' validation
mean Dice weighted by their subjects (a baseline: its own training sites' validation subjects),
``heldout`` the held-out test mean Dice, ``auto`` the held-out one when the server evaluates,
else validation. A study that reports held-out scores stops on ``validation``, so the test set
never chooses the model. The rule is Keras' ``EarlyStopping(mode="max")``: a NaN score is a round without
improvement, and the run stops at ``best_round + patience`` at the earliest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

HELDOUT_MONITOR = "held-out mean Dice"
VALIDATION_MONITOR = "validation mean Dice"


class EarlyStopping:
    """Tells after which round a run should stop; its state resumes with the run.

    Example::

        stopper = EarlyStopping(patience=2, min_delta=0.01, monitor="held-out mean Dice")
        for server_round, dice in enumerate([0.10, 0.30, 0.305, 0.29], start=1):
            if stopper.update(server_round, dice):
                break  # after round 4: no gain > 0.01 since round 2
    """

    def __init__(self, patience: int, min_delta: float = 0.0, monitor: str = "mean Dice"):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if not 0.0 <= min_delta < math.inf:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.monitor = monitor
        self.best = -math.inf
        self.best_round: int | None = None
        self.wait = 0  # rounds since the best one
        self.stopped_round: int | None = None

    @property
    def enabled(self) -> bool:
        return self.patience > 0

    def update(self, server_round: int, value: float) -> bool:
        """Record ``server_round``'s score; True when the run should stop after this round."""
        if not self.enabled:
            return False
        value = float(value)
        if not math.isnan(value) and value - self.best > self.min_delta:
            self.best, self.best_round, self.wait = value, server_round, 0
        else:
            self.wait += 1
        if self.wait >= self.patience:
            self.stopped_round = server_round
            return True
        return False

    @property
    def next_round_may_stop(self) -> bool:
        """Whether the run ends after the next round unless that round improves on the best."""
        return self.enabled and self.wait >= self.patience - 1

    @property
    def reason(self) -> str:
        return f"no improvement of {self.monitor} > {self.min_delta} for {self.patience} rounds"

    def report(self) -> dict[str, Any] | None:
        """summary.json's ``stopped_early``: the round, the best round and why; None while running on."""
        if self.stopped_round is None:
            return None
        return {"round": self.stopped_round, "best_round": self.best_round, "reason": self.reason}

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_round": self.best_round,
            "wait": self.wait,
            "stopped_round": self.stopped_round,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """A resumed run's state; the settings stay this run's (patience may change on resume)."""
        self.best = float(state.get("best", -math.inf))
        self.best_round = None if state.get("best_round") is None else int(state["best_round"])
        self.wait = int(state.get("wait", 0))
        self.stopped_round = None  # a resumed run goes on until the rule stops it again
