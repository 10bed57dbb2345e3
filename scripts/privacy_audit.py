#!/usr/bin/env python
"""Privacy/utility trade-off of client-level DP: held-out Dice and a membership-inference attack.

For each noise multiplier it trains the global model through a real federation
(scripts/simulate.py on a synthetic cohort; 0 means DP off), then attacks the final model with
the loss-threshold membership inference of Yeom et al. 2018: a subject whose whole-volume loss
is low is guessed to be one the sites trained on. Members are the sites' training subjects;
non-members are their validation subjects (same sites and scanners, never trained on). The
attack's AUC (0.5 = guessing, 1 = every member identified) sits next to the held-out Dice in
one table, written as markdown, CSV, JSON and a PNG to --out.

The epsilon of each DP setting is the one its run spent, read from the run's summary.json:
the ServerApp composes every noised round into Flower's RDP accountant (no sampling
amplification, at run-config key dp-delta; fedtumor/federation/privacy.py).

    python scripts/privacy_audit.py --out DIR --noise-multipliers 0 1e-6 0.003 0.03 --clipping-norms 5 15
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the Flower app the audit federates
# Settings of the shipped audit: small enough for a 2-core machine, no augmentation and
# several local epochs so that the undefended model can memorise (a fair test for the attack).
DEFAULT_RUN_CONFIG = (
    "patch-size=32 samples-per-volume=3 batch-size=2 augment=false local-epochs=3 val-fraction=0.5 "
    "fraction-evaluate=0.0"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (cohort, runs, logs, results)")
    parser.add_argument(
        "--noise-multipliers",
        type=float,
        nargs="+",
        default=[0.0, 1e-6, 0.003, 0.03],
        help="0 trains without DP; 1e-6 is clipping with negligible noise",
    )
    parser.add_argument(
        "--clipping-norms", type=float, nargs="+", default=[5.0], help="dp-clipping-norm: each DP run takes every one"
    )
    parser.add_argument("--sites", type=int, default=3, help="simulated sites")
    parser.add_argument("--subjects", type=int, default=24, help="synthetic subjects over all sites")
    parser.add_argument("--test-subjects", type=int, default=4, help="held-out subjects for Dice")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cohort and the runs")
    parser.add_argument("--run-config", default=DEFAULT_RUN_CONFIG, help="extra run-config overrides for every run")
    args = parser.parse_args(argv)
    if any(z < 0 for z in args.noise_multipliers) or any(c <= 0 for c in args.clipping_norms):
        parser.error("--noise-multipliers must be >= 0 and --clipping-norms > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from data_loaders.synthetic import generate_cohort
    from fedtumor.bench.privacy_study import (
        AuditPlan,
        FederationFailed,
        format_table,
        run_audit,
        write_outputs,
    )
    from fedtumor.core.errors import ConfigError, DataError

    console = Console()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["FEDTUMOR_HOME"] = str(out / "home")  # the runs' preprocessing cache, reused here for the attack
    command = "python scripts/privacy_audit.py " + " ".join(
        f"'{a}'" if (" " in a or not a) else a for a in (sys.argv[1:] if argv is None else argv)
    )
    plan = AuditPlan(
        sites=args.sites,
        subjects=args.subjects,
        test_subjects=args.test_subjects,
        rounds=args.rounds,
        seed=args.seed,
        run_config=args.run_config,
        noise_multipliers=tuple(args.noise_multipliers),
        clipping_norms=tuple(args.clipping_norms),
    )
    console.print(f"cohort: {args.sites} sites, {args.subjects} subjects + {args.test_subjects} held out")
    cohort = generate_cohort(
        out / "cohort", args.sites, args.subjects, args.seed, shape=64, n_test=args.test_subjects, progress=True
    ).root
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            rows = run_audit(plan, cohort, out, REPO, {**os.environ}, progress)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FederationFailed as exc:
        sys.exit(f"error: {exc}")
    write_outputs(rows, out, command, plan, {k: v for k, v in vars(args).items() if k != "out"})
    console.print(format_table(rows))
    console.print(f"results in {out}: privacy_audit.md, .csv, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
