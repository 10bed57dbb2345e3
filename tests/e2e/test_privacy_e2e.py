"""One short, real federation with client-level DP on: sites clip, the server adds noise, summary says so.

The clipping norm is far below the sites' natural update (several units at these settings),
so the global model can move only by the clipped mean plus the noise each round; the noise
standard deviation the ServerApp logs must be noise_multiplier x clipping_norm / sites. The
epsilon spent after each round, in summary.json and in that round's audit-log entry, must be
Flower's RDP accountant composed once per round.
"""

import json
import math

import pytest
import torch
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from fedtumor.core.model import build_model
from fedtumor.run.checkpoint import load_checkpoint
from tests.e2e.simulation import TINY_MODEL, output_of, simulate

pytestmark = pytest.mark.e2e

ROUNDS, SITES, NOISE_MULTIPLIER, CLIPPING_NORM, DELTA = 2, 2, 0.02, 0.05, 1e-6


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory, two_site_cohort):
    root = tmp_path_factory.mktemp("dp-e2e")
    run_config = (
        f"num-server-rounds={ROUNDS} data-dir='{two_site_cohort}' output-dir='{root / 'runs'}' run-name='dp' "
        f"{TINY_MODEL} fraction-evaluate=0.0 dp-noise-multiplier={NOISE_MULTIPLIER} dp-clipping-norm={CLIPPING_NORM} "
        f"dp-delta={DELTA}"
    )
    completed = simulate(SITES, run_config, root / "home", root / "flwr-home", timeout=600)
    assert completed.returncode == 0, output_of(completed)
    return {"run_dir": root / "runs" / "dp", "stdout": completed.stdout}


def test_summary_reports_the_dp_settings(dp_run):
    summary = json.loads((dp_run["run_dir"] / "summary.json").read_text())
    dp = summary["differential_privacy"]
    assert dp["enabled"] and dp["mechanism"] == "client-side fixed clipping, server-side Gaussian noise"
    assert (dp["noise_multiplier"], dp["clipping_norm"], dp["delta"]) == (NOISE_MULTIPLIER, CLIPPING_NORM, DELTA)
    assert dp["accounting"]["sampling"] == "no-amplification" and dp["releases"] == ROUNDS
    assert set(summary["sites"]) == {"site-1", "site-2"} and summary["failed_replies"] == []
    assert all(math.isfinite(summary["final"][name]) for name in ("dice_et", "dice_tc", "dice_wt"))


def test_server_noise_is_calibrated_to_the_sites_averaged(dp_run):
    std = NOISE_MULTIPLIER * CLIPPING_NORM / SITES
    assert dp_run["stdout"].count(f"central DP noise with {std:.4f} stdev added") == ROUNDS


def test_the_global_model_moves_no_further_than_clipped_updates_and_noise_allow(dp_run):
    torch.manual_seed(0)  # the ServerApp seeds the initial global model with the run's seed
    initial = build_model("unet", 4).state_dict()
    final, _ = load_checkpoint(dp_run["run_dir"] / "final_model.pt")
    moved = math.sqrt(sum(float(((final.state_dict()[k] - v) ** 2).sum()) for k, v in initial.items()))
    size = sum(v.numel() for v in initial.values())
    noise_norm = NOISE_MULTIPLIER * CLIPPING_NORM / SITES * math.sqrt(size)  # expected norm of one round's noise
    # Each round: the mean of updates clipped to C has norm <= C, plus the noise (within 20 %).
    assert 0 < moved <= ROUNDS * (CLIPPING_NORM + 1.2 * noise_norm)


def test_the_epsilon_after_every_round_is_flowers_accountant_in_summary_and_audit_log(dp_run):
    summary = json.loads((dp_run["run_dir"] / "summary.json").read_text())["differential_privacy"]
    entries = [json.loads(line) for line in (dp_run["run_dir"] / "audit.jsonl").read_text().splitlines()]
    rounds = [entry for entry in entries if entry["event"] == "round" and entry["round"] >= 1]
    config = PrivacyConfig(DELTA, SITES, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    accountant = RdpAccountant(config)
    expected = []
    for entry in rounds:
        # FedAvg weights the sites by training subjects: the largest share sets the sensitivity.
        weights = [update["num_examples"] for update in entry["train"]["updates"].values()]
        effective = NOISE_MULTIPLIER * (sum(weights) / len(weights)) / max(weights)
        accountant.compose(GaussianPrivacyEvent(effective, len(weights), SITES))
        expected.append(accountant.get_epsilon(DELTA))
    assert len(expected) == ROUNDS and expected[0] < expected[1]
    assert [entry["privacy"]["epsilon"] for entry in rounds] == pytest.approx(expected, rel=1e-9)
    assert [entry["privacy"]["releases"] for entry in rounds] == list(range(1, ROUNDS + 1))
    assert [r["epsilon"] for r in summary["rounds"]] == pytest.approx(expected, rel=1e-9)
    assert summary["epsilon_spent"] == pytest.approx(expected[-1], rel=1e-9)
