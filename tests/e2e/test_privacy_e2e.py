"""One short, real federation with client-level DP on: sites clip, the server adds noise, summary says so.

The clipping norm is far below the sites' natural update (several units at these settings),
so the global model can move only by the clipped mean plus the noise each round; the noise
standard deviation the ServerApp logs must be noise_multiplier x clipping_norm / sites.
"""

import json
import math

import pytest
import torch

from fedtumor.core.model import build_model
from fedtumor.run.checkpoint import load_checkpoint
from tests.e2e.simulation import TINY_MODEL, output_of, simulate

pytestmark = pytest.mark.e2e

ROUNDS, SITES, NOISE_MULTIPLIER, CLIPPING_NORM = 2, 2, 0.02, 0.05


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory, two_site_cohort):
    root = tmp_path_factory.mktemp("dp-e2e")
    run_config = (
        f"num-server-rounds={ROUNDS} data-dir='{two_site_cohort}' output-dir='{root / 'runs'}' run-name='dp' "
        f"{TINY_MODEL} fraction-evaluate=0.0 dp-noise-multiplier={NOISE_MULTIPLIER} dp-clipping-norm={CLIPPING_NORM}"
    )
    completed = simulate(SITES, run_config, root / "home", root / "flwr-home", timeout=600)
    assert completed.returncode == 0, output_of(completed)
    return {"run_dir": root / "runs" / "dp", "stdout": completed.stdout}


def test_summary_reports_the_dp_settings(dp_run):
    summary = json.loads((dp_run["run_dir"] / "summary.json").read_text())
    assert summary["differential_privacy"] == {
        "enabled": True,
        "mechanism": "client-side fixed clipping, server-side Gaussian noise",
        "noise_multiplier": NOISE_MULTIPLIER,
        "clipping_norm": CLIPPING_NORM,
    }
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
