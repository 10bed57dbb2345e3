"""The privacy audit: one federation per DP setting, then a membership-inference attack on its final model.

Each setting (noise multiplier, clipping norm; noise 0 is DP off) trains the global model
through a real simulation of the app on a synthetic cohort; the final model is then attacked
(:mod:`fedtumor.bench.privacy`). Members are the sites' training subjects; non-members are
their validation subjects (same sites and scanners, never trained on). The epsilon of each
setting is the one its run spent, read from its summary.json (Flower's RDP accountant, composed
by the ServerApp each round). The results, one :class:`Row` per setting, are written as
markdown, CSV, JSON and a PNG.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedtumor.bench.privacy import attack_auc, auc_standard_error, spent_epsilon
from fedtumor.core.config import RunConfig, read_run_config
from fedtumor.core.metrics import mean_dice
from fedtumor.deployment.simulation import simulation_command
from fedtumor.run.files import CONFIG_FILE, FINAL_MODEL_FILE, SUMMARY_FILE
from fedtumor.run.writer import read_summary

AUDIT_FILES = ("privacy_audit.md", "privacy_audit.csv", "privacy_audit.json", "privacy_audit.png")


class FederationFailed(RuntimeError):
    """A setting's federation did not finish; the message names its log."""


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
class AuditPlan:
    """The cohort, the federations' shared run config and the DP settings to audit."""

    sites: int
    subjects: int
    test_subjects: int
    rounds: int
    seed: int
    run_config: str
    noise_multipliers: tuple[float, ...]
    clipping_norms: tuple[float, ...]

    def settings(self) -> list[Setting]:
        # Without DP the clipping norm is unused: one run, whatever the norms.
        settings = [Setting(0.0, self.clipping_norms[0])] if 0 in self.noise_multipliers else []
        return settings + [Setting(z, c) for c in self.clipping_norms for z in self.noise_multipliers if z > 0]


@dataclass(frozen=True)
class Row:
    setting: str
    noise_multiplier: float
    clipping_norm: float | None
    epsilon: float  # spent by the run (summary.json); inf without DP
    delta: float | None
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


def federation_run_config(plan: AuditPlan, setting: Setting, cohort: Path, out: Path) -> str:
    return (
        f"num-server-rounds={plan.rounds} data-dir='{cohort}' output-dir='{out / 'runs'}' run-name='{setting.name}' "
        f"seed={plan.seed} {plan.run_config} {setting.run_config()}"
    )


def federate(plan: AuditPlan, setting: Setting, cohort: Path, out: Path, app_dir: Path, env: dict) -> tuple[Path, bool]:
    """Train through a simulation of the app: (the run folder, whether a finished identical run was reused).

    Raises FederationFailed naming the log when the federation fails.
    """
    run_config = federation_run_config(plan, setting, cohort, out)
    run_dir = out / "runs" / setting.name
    if finished_with(run_dir, read_run_config(run_config, app_dir), plan.sites):
        return run_dir, True  # adding a setting to an audit does not retrain the others
    log_path = out / "logs" / f"{setting.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [*simulation_command(app_dir), "--num-supernodes", str(plan.sites), "--run-config", run_config]
    with open(log_path, "w") as log:
        completed = subprocess.run(command, cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        raise FederationFailed(f"the {setting.name} federation failed (exit {completed.returncode}); see {log_path}")
    return run_dir, False


def finished_with(run_dir: Path, wanted: RunConfig, n_sites: int) -> bool:
    """Whether ``run_dir`` holds a finished run of exactly this run config on ``n_sites`` sites."""
    if not (run_dir / SUMMARY_FILE).is_file() or not (run_dir / FINAL_MODEL_FILE).is_file():
        return False
    saved = json.loads((run_dir / CONFIG_FILE).read_text())["config"]
    accounted = (read_summary(run_dir) or {}).get("differential_privacy", {})
    if wanted.dp_noise_multiplier > 0 and "epsilon_spent" not in accounted:
        return False  # written before the ServerApp accounted epsilon
    return saved.get("num-nodes") == n_sites and all(
        saved.get(key) == value for key, value in wanted.to_run_config().items()
    )


def membership(config: RunConfig, n_sites: int) -> tuple[list, list]:
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


def subject_losses(run_dir: Path, subjects: list, loss_name: str, advance: Callable[[], object]) -> list[float]:
    """Whole-volume training loss of the run's final global model on each subject."""
    import torch
    from monai.inferers import sliding_window_inference

    from data_loaders.pipelines import model_input, region_target
    from fedtumor.core.losses import build_loss
    from fedtumor.run.checkpoint import load_checkpoint

    model, meta = load_checkpoint(run_dir / FINAL_MODEL_FILE)
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


def run_audit(plan: AuditPlan, cohort: Path, out: Path, app_dir: Path, env: dict, progress) -> list[Row]:
    """Every setting in turn: its federation (or a finished identical run), then the attack on its model.

    ``progress`` is a rich Progress; FederationFailed when a federation fails.
    """
    # The run config the federations used, as the sites saw it (to find members and non-members).
    config = read_run_config(f"data-dir='{cohort}' seed={plan.seed} {plan.run_config}", app_dir)
    settings = plan.settings()
    rows = []
    overall = progress.add_task("settings", total=len(settings))
    for setting in settings:
        progress.update(overall, description=f"{setting.name}: federated training ({plan.rounds} rounds)")
        run_dir, reused = federate(plan, setting, cohort, out, app_dir, env)
        if reused:
            progress.console.print(f"{setting.name}: reusing the finished run in {run_dir}")
        members, others = membership(config, plan.sites)
        attack = progress.add_task(f"{setting.name}: subject losses", total=len(members) + len(others))
        advance = functools.partial(progress.advance, attack)
        member_losses = subject_losses(run_dir, members, config.loss, advance)
        other_losses = subject_losses(run_dir, others, config.loss, advance)
        progress.remove_task(attack)
        summary = read_summary(run_dir)
        final = summary["final"]
        auc = attack_auc(member_losses, other_losses)
        dp = setting.noise_multiplier > 0
        epsilon, delta = spent_epsilon(summary)
        rows.append(
            Row(
                setting=setting.name,
                noise_multiplier=setting.noise_multiplier,
                clipping_norm=setting.clipping_norm if dp else None,
                epsilon=epsilon,
                delta=delta,
                dice_et=final["dice_et"],
                dice_tc=final["dice_tc"],
                dice_wt=final["dice_wt"],
                dice_mean=mean_dice(final),
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
    return rows


# -- outputs ----------------------------------------------------------------------------------


def format_table(rows: list[Row]) -> str:
    lines = [
        "| setting | noise multiplier | clipping norm | ε spent (RDP) at δ | Dice ET | Dice TC | Dice WT | "
        "mean Dice | attack AUC ± SE | members / non-members | mean loss members / non-members |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        eps = "∞" if math.isinf(r.epsilon) else f"{r.epsilon:.3g} at {r.delta:g}"
        clip = "-" if r.clipping_norm is None else f"{r.clipping_norm:g}"
        lines.append(
            f"| {r.setting} | {r.noise_multiplier:g} | {clip} | {eps} | {r.dice_et:.3f} | {r.dice_tc:.3f} | "
            f"{r.dice_wt:.3f} | {r.dice_mean:.3f} | {r.attack_auc:.3f} ± {r.attack_auc_se:.3f} | "
            f"{r.members} / {r.non_members} | {r.member_loss:.4f} / {r.non_member_loss:.4f} |"
        )
    return "\n".join(lines)


def write_outputs(rows: list[Row], out: Path, command: str, plan: AuditPlan, settings: dict) -> None:
    """:data:`AUDIT_FILES` in ``out``; ``settings`` are the command's options, recorded in the JSON."""
    markdown, table_csv, report_json, png = (out / name for name in AUDIT_FILES)
    markdown.write_text(
        f"# Privacy audit\n\nCommand: `{command}`\n\n{format_table(rows)}\n\n"
        f"{plan.sites} sites, {plan.subjects} site subjects, {plan.rounds} rounds; run config `{plan.run_config}`. "
        "Attack: loss threshold on the final global model; AUC 0.5 is chance.\n"
    )
    with open(table_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    payload = {
        "command": command,
        "settings": settings,
        "rows": [{**asdict(r), "epsilon": None if math.isinf(r.epsilon) else r.epsilon} for r in rows],
    }
    report_json.write_text(json.dumps(payload, indent=2) + "\n")
    plot(rows, png)


def plot(rows: list[Row], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
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
