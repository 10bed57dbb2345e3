#!/usr/bin/env python
"""Privacy/utility trade-off of client-level DP: held-out Dice and a membership-inference attack.

For each noise multiplier it trains the global model through a real federation
(scripts/simulate.py on a synthetic cohort; 0 means DP off), then attacks the final model with
the loss-threshold membership inference of Yeom et al. 2018: a subject whose whole-volume loss
is low is guessed to be one the sites trained on. Members are the sites' training subjects;
non-members are their validation subjects (same sites and scanners, never trained on). The
attack's AUC (0.5 = guessing, 1 = every member identified) sits next to the held-out Dice in
one table, written as markdown, CSV, JSON and a PNG to --out.

The nominal epsilon is what Flower's noise calibration implies for equal site weights and no
sampling amplification: T rounds of a Gaussian mechanism with noise multiplier z compose to
mu-GDP with mu = sqrt(T) / z (Dong, Roth, Su 2022), converted to (epsilon, delta).

    python scripts/privacy_audit.py --out DIR --noise-multipliers 0 1e-6 0.003 0.03 --clipping-norms 5 15
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import subprocess
import sys
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parent.parent
DELTA = 1e-5
# Settings of the shipped audit: small enough for a 2-core machine, no augmentation and
# several local epochs so that the undefended model can memorise (a fair test for the attack).
DEFAULT_RUN_CONFIG = (
    "patch-size=32 samples-per-volume=3 batch-size=2 augment=false local-epochs=3 val-fraction=0.5 "
    "fraction-evaluate=0.0"
)


# -- the attack and the accounting (pure functions, tested by hand) ----------------------------


def attack_auc(member_losses, nonmember_losses) -> float:
    """AUC of the rule "lower loss means member": P(member loss < non-member loss), ties count 1/2.

    The Mann-Whitney statistic from average ranks of the scores -loss.
    """
    members, others = np.asarray(member_losses, float), np.asarray(nonmember_losses, float)
    if members.size == 0 or others.size == 0:
        raise ValueError("the attack needs at least one member and one non-member")
    ranks = rankdata(-np.concatenate([members, others]))
    u = ranks[: members.size].sum() - members.size * (members.size + 1) / 2
    return float(u / (members.size * others.size))


def auc_standard_error(auc: float, n_members: int, n_others: int) -> float:
    """Hanley and McNeil (1982) standard error of an AUC estimate."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_members - 1) * (q1 - auc**2) + (n_others - 1) * (q2 - auc**2)) / (
        n_members * n_others
    )
    return math.sqrt(max(variance, 0.0))


def nominal_epsilon(noise_multiplier: float, rounds: int, delta: float = DELTA) -> float:
    """Epsilon at ``delta`` of ``rounds`` Gaussian releases with this noise multiplier (inf when 0)."""
    if noise_multiplier <= 0:
        return math.inf
    mu = math.sqrt(rounds) / noise_multiplier

    def delta_of(eps: float) -> float:  # mu-GDP to (eps, delta), in log space for large mu
        return float(ndtr(-eps / mu + mu / 2) - math.exp(eps + log_ndtr(-eps / mu - mu / 2))) - delta

    if delta_of(0.0) <= 0:
        return 0.0
    return float(brentq(delta_of, 0.0, mu**2 / 2 + 10 * mu + 10, xtol=1e-6))


# -- one federation per noise multiplier ------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    noise_multiplier: float
    clipping_norm: float

    @property
    def name(self) -> str:
        return "no-dp" if self.noise_multiplier == 0 else f"dp-z{self.noise_multiplier:g}-c{self.clipping_norm:g}"

    def run_config(self) -> str:
        return f"dp-noise-multiplier={float(self.noise_multiplier)} dp-clipping-norm={float(self.clipping_norm)}"


@dataclass(frozen=True)
class Row:
    setting: str
    noise_multiplier: float
    clipping_norm: float | None
    epsilon: float
    dice_et: float
    dice_tc: float
    dice_wt: float
    dice_mean: float
    attack_auc: float
    attack_auc_se: float
    members: int
    non_members: int
    member_loss: float
    non_member_loss: float
    run_seconds: float  # the ServerApp's wall time of the federation


def federate(setting: Setting, args: argparse.Namespace, cohort: Path, out: Path, env: dict) -> tuple[Path, bool]:
    """Train through scripts/simulate.py: (the run folder, whether a finished identical run was reused).

    Exits naming the log when the federation fails.
    """
    run_config = (
        f"num-server-rounds={args.rounds} data-dir='{cohort}' output-dir='{out / 'runs'}' run-name='{setting.name}' "
        f"seed={args.seed} {args.run_config} {setting.run_config()}"
    )
    run_dir = out / "runs" / setting.name
    if finished_with(run_dir, run_config, args.sites):
        return run_dir, True  # adding a setting to an audit does not retrain the others
    log_path = out / "logs" / f"{setting.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO / "scripts" / "simulate.py"), "--num-supernodes", str(args.sites)]
    command += ["--run-config", run_config]
    with open(log_path, "w") as log:
        completed = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        sys.exit(f"error: the {setting.name} federation failed (exit {completed.returncode}); see {log_path}")
    return run_dir, False


def finished_with(run_dir: Path, run_config: str, n_sites: int) -> bool:
    """Whether ``run_dir`` holds a finished run of exactly this run config on ``n_sites`` sites."""
    if not (run_dir / "summary.json").is_file() or not (run_dir / "final_model.pt").is_file():
        return False
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    wanted = full_config(run_config).to_run_config()
    return saved.get("num-nodes") == n_sites and all(saved.get(key) == value for key, value in wanted.items())


def full_config(overrides: str):
    """The shipped run config with ``overrides``, validated as the ServerApp does."""
    from flwr.common.config import parse_config_args

    from fedtumor.core.config import load_run_config

    with open(REPO / "pyproject.toml", "rb") as handle:
        shipped = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    return load_run_config({**shipped, **parse_config_args([overrides])})


def audit_config(args: argparse.Namespace, cohort: Path):
    """The run config the federations used, as the sites saw it (to find members and non-members)."""
    return full_config(f"data-dir='{cohort}' seed={args.seed} {args.run_config}")


def membership(config, n_sites: int) -> tuple[list, list]:
    """(members, non-members) as preprocessed subjects: each site's training and validation subjects."""
    from data_loaders.site import preprocess_subject, preprocessed_cache_dir, preprocessing_settings, resolve_site

    members, others = [], []
    settings, cache = preprocessing_settings(config), preprocessed_cache_dir()
    for partition in range(n_sites):
        _, train, val = resolve_site(config, {"partition-id": partition, "num-partitions": n_sites})
        trained = {files.subject_id for files in train}
        members += [preprocess_subject(files, settings, cache) for files in train]
        # A one-subject site validates on its training subject: that one is a member, not a non-member.
        others += [preprocess_subject(files, settings, cache) for files in val if files.subject_id not in trained]
    return members, others


def subject_losses(run_dir: Path, subjects: list, loss_name: str, advance) -> list[float]:
    """Whole-volume training loss of the run's final global model on each subject."""
    import torch
    from monai.inferers import sliding_window_inference

    from data_loaders.pipelines import model_input, region_target
    from fedtumor.core.losses import build_loss
    from fedtumor.run.checkpoint import load_checkpoint

    model, meta = load_checkpoint(run_dir / "final_model.pt")
    model.eval()
    loss_fn = build_loss(loss_name)
    losses = []
    with torch.no_grad():
        for subject in subjects:
            roi = (meta["patch_size"],) * 3
            logits = sliding_window_inference(model_input(subject)[None], roi, 1, model, overlap=0.25, mode="gaussian")
            losses.append(float(loss_fn(logits, region_target(subject)[None])))
            advance()
    return losses


# -- outputs ----------------------------------------------------------------------------------


def format_table(rows: list[Row]) -> str:
    lines = [
        "| setting | noise multiplier | clipping norm | nominal ε (δ=1e-5) | Dice ET | Dice TC | Dice WT | "
        "mean Dice | attack AUC ± SE | members / non-members | mean loss members / non-members |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        eps = "∞" if math.isinf(r.epsilon) else f"{r.epsilon:.3g}"
        clip = "-" if r.clipping_norm is None else f"{r.clipping_norm:g}"
        lines.append(
            f"| {r.setting} | {r.noise_multiplier:g} | {clip} | {eps} | {r.dice_et:.3f} | {r.dice_tc:.3f} | "
            f"{r.dice_wt:.3f} | {r.dice_mean:.3f} | {r.attack_auc:.3f} ± {r.attack_auc_se:.3f} | "
            f"{r.members} / {r.non_members} | {r.member_loss:.4f} / {r.non_member_loss:.4f} |"
        )
    return "\n".join(lines)


def write_outputs(rows: list[Row], out: Path, command: str, args: argparse.Namespace) -> None:
    table = format_table(rows)
    (out / "privacy_audit.md").write_text(
        f"# Privacy audit\n\nCommand: `{command}`\n\n{table}\n\n"
        f"{args.sites} sites, {args.subjects} site subjects, {args.rounds} rounds; run config `{args.run_config}`. "
        "Attack: loss threshold on the final global model; AUC 0.5 is chance.\n"
    )
    with open(out / "privacy_audit.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    payload = {
        "command": command,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "delta": DELTA,
        "rows": [{**asdict(r), "epsilon": None if math.isinf(r.epsilon) else r.epsilon} for r in rows],
    }
    (out / "privacy_audit.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(rows, out / "privacy_audit.png")


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for r in rows:
        label = "no DP" if r.noise_multiplier == 0 else f"z={r.noise_multiplier:g}, C={r.clipping_norm:g}"
        ax.errorbar(r.attack_auc, r.dice_mean, xerr=r.attack_auc_se, fmt="o", capsize=3, label=label)
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_xlabel("membership-inference attack AUC (0.5 = chance)")
    ax.set_ylabel("held-out mean Dice (ET, TC, WT)")
    ax.set_title("Client-level DP: utility vs privacy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main -------------------------------------------------------------------------------------


def main() -> int:
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
    args = parser.parse_args()
    if any(z < 0 for z in args.noise_multipliers) or any(c <= 0 for c in args.clipping_norms):
        parser.error("--noise-multipliers must be >= 0 and --clipping-norms > 0")

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from data_loaders.synthetic import generate_cohort

    console = Console()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = out / "home"  # the runs' preprocessing cache, reused here for the attack
    os.environ["FEDTUMOR_HOME"] = str(home)
    env = {**os.environ}
    command = "python scripts/privacy_audit.py " + " ".join(
        f"'{a}'" if (" " in a or not a) else a for a in sys.argv[1:]
    )
    console.print(f"cohort: {args.sites} sites, {args.subjects} subjects + {args.test_subjects} held out")
    cohort = generate_cohort(
        out / "cohort", args.sites, args.subjects, args.seed, shape=64, n_test=args.test_subjects, progress=True
    ).root
    config = audit_config(args, cohort)
    # Without DP the clipping norm is unused: one run, whatever the norms.
    settings = [Setting(0.0, args.clipping_norms[0])] if 0 in args.noise_multipliers else []
    settings += [Setting(z, c) for c in args.clipping_norms for z in args.noise_multipliers if z > 0]
    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("settings", total=len(settings))
        for setting in settings:
            progress.update(overall, description=f"{setting.name}: federated training ({args.rounds} rounds)")
            run_dir, reused = federate(setting, args, cohort, out, env)
            if reused:
                progress.console.print(f"{setting.name}: reusing the finished run in {run_dir}")
            members, others = membership(config, args.sites)
            attack = progress.add_task(f"{setting.name}: subject losses", total=len(members) + len(others))
            advance = functools.partial(progress.advance, attack)
            member_losses = subject_losses(run_dir, members, config.loss, advance)
            other_losses = subject_losses(run_dir, others, config.loss, advance)
            progress.remove_task(attack)
            summary = json.loads((run_dir / "summary.json").read_text())
            final = summary["final"]
            auc = attack_auc(member_losses, other_losses)
            dp = setting.noise_multiplier > 0
            rows.append(
                Row(
                    setting=setting.name,
                    noise_multiplier=setting.noise_multiplier,
                    clipping_norm=setting.clipping_norm if dp else None,
                    epsilon=nominal_epsilon(setting.noise_multiplier, args.rounds),
                    dice_et=final["dice_et"],
                    dice_tc=final["dice_tc"],
                    dice_wt=final["dice_wt"],
                    dice_mean=(final["dice_et"] + final["dice_tc"] + final["dice_wt"]) / 3,
                    attack_auc=auc,
                    attack_auc_se=auc_standard_error(auc, len(members), len(others)),
                    members=len(members),
                    non_members=len(others),
                    member_loss=float(np.mean(member_losses)),
                    non_member_loss=float(np.mean(other_losses)),
                    run_seconds=summary["wall_time_s"],
                )
            )
            progress.advance(overall)
    write_outputs(rows, out, command, args)
    console.print(format_table(rows))
    console.print(f"results in {out}: privacy_audit.md, .csv, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
