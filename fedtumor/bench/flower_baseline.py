"""fedtumor's simulation measured against a bare Flower app doing the same training, in one run.

The bare app (``scripts/bare_flower_app``) is Flower's FedAvg over the same MONAI U-Net, each
site taking the same number of Adam steps of the same batch on random patches, and nothing
else: no data loading, checks, ledger, audit log or resume state. Both run as real Ray
simulations through the same runner, one after the other, and both time their rounds inside
the ServerApp (from one round's ``evaluate_fn`` to the next). What each adds per round is its
round's wall time minus its sites' own training seconds (the sites train one at a time), so
the two need not train for exactly as long. The three measures, and their targets:

- ``per_round_overhead_s``: fedtumor's overhead minus the bare app's (target at most 0.1 s);
- ``startup_ratio``: launch to round 1, fedtumor over bare (target at most 1.5);
- ``first_round_ratio``: fedtumor's first round over its steady round (target at most 1.5).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedtumor.bench.probe import run_simulation, serverapp_round_seconds
from fedtumor.run.writer import read_metrics

TARGETS = {"per_round_overhead_s": 0.1, "startup_ratio": 1.5, "first_round_ratio": 1.5}


@dataclass
class AppRun:
    """One simulation's clock: start-up, each round's wall time and its sites' training time."""

    app: str
    ok: bool
    status: str
    startup_s: float | None
    wall_s: float
    round_s: dict[int, float] = field(default_factory=dict)
    training_s: dict[int, float] = field(default_factory=dict)
    log_tail: str = ""

    def steady_rounds(self) -> list[int]:
        return [r for r in sorted(self.round_s) if r >= 2 and r in self.training_s]

    @property
    def steady_round_s(self) -> float:
        return statistics.median(self.round_s[r] for r in self.steady_rounds())

    @property
    def overhead_s(self) -> float:
        """The median steady round's wall time minus its sites' training seconds."""
        return statistics.median(self.round_s[r] - self.training_s[r] for r in self.steady_rounds())

    @property
    def first_round_s(self) -> float:
        return self.round_s[1]


def site_training_seconds(run_dir: Path, combine: str = "sum") -> dict[int, float]:
    """Per round, a fedtumor run's sites' own train-seconds combined: ``sum`` when they train one at a
    time (a simulation on one core's worth of Ray), ``max`` when side by side (a live federation)."""
    metrics = read_metrics(run_dir)
    rows = metrics[
        (metrics["split"] == "train") & (metrics["metric"] == "train_seconds") & (metrics["scope"] != "global")
    ]
    return {int(r): float(v) for r, v in rows.groupby("round")["value"].agg(combine).items()}


def run_bare(
    app_dir: Path, work: Path, sites: int, run_config: str, num_cpus: int, on_line: Callable[[str], None] | None
) -> AppRun:
    """The bare Flower app; its ServerApp writes its round clock to a file in ``work``."""
    clock = work / "bare-rounds.json"
    clock.unlink(missing_ok=True)
    timing = run_simulation(
        sites,
        f"{run_config} min-nodes={sites} rounds-file='{clock}'",
        flwr_home=work / "flwr-home-bare",
        log_path=work / "logs" / "bare.log",
        num_cpus=num_cpus,
        on_line=on_line,
        app_dir=app_dir,
        check_config=False,
    )
    run = AppRun("bare Flower", timing.ok, timing.status, timing.startup_s, timing.wall_s, log_tail=timing.log_tail)
    if timing.ok and clock.is_file():
        record = json.loads(clock.read_text())
        run.round_s = {int(r): float(s) for r, s in record["round_wall_s"].items()}
        run.training_s = {int(r): float(s) for r, s in record["sites_train_s"].items()}
    return run


def run_fedtumor(
    app_dir: Path,
    work: Path,
    sites: int,
    run_config: str,
    run_dir: Path,
    num_cpus: int,
    on_line: Callable[[str], None] | None,
) -> AppRun:
    """fedtumor's app; its rounds from the run's metrics.csv (``round_wall_s``, ``train_seconds``)."""
    timing = run_simulation(
        sites,
        run_config,
        flwr_home=work / "flwr-home-fedtumor",
        log_path=work / "logs" / "fedtumor.log",
        num_cpus=num_cpus,
        on_line=on_line,
        app_dir=app_dir,
    )
    run = AppRun("fedtumor", timing.ok, timing.status, timing.startup_s, timing.wall_s, log_tail=timing.log_tail)
    if timing.ok:
        run.round_s = serverapp_round_seconds(run_dir)
        run.training_s = site_training_seconds(run_dir)
    return run


def comparison(bare: AppRun, fedtumor: AppRun) -> dict:
    """The three measures (see the module docstring), each with its target and whether it is met."""
    measures = {
        "per_round_overhead_s": fedtumor.overhead_s - bare.overhead_s,
        "startup_ratio": fedtumor.startup_s / bare.startup_s,
        "first_round_ratio": fedtumor.first_round_s / fedtumor.steady_round_s,
    }
    return {
        "measures": measures,
        "targets": dict(TARGETS),
        "met": {name: measures[name] <= TARGETS[name] for name in TARGETS},
        "runs": {run.app: {**asdict(run), "log_tail": None} for run in (bare, fedtumor)},
        "apps": {
            run.app: {
                "startup_s": run.startup_s,
                "first_round_s": run.first_round_s,
                "steady_round_s": run.steady_round_s,
                "overhead_s_per_round": run.overhead_s,
            }
            for run in (bare, fedtumor)
        },
    }
