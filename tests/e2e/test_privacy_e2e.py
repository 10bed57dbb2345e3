"""One short, real federation with client-level DP on: sites clip, the server adds noise, summary says so.

The clipping norm is far below the sites' natural update (several units at these settings),
so the global model can move only by the clipped mean plus the noise each round; the noise
standard deviation the ServerApp logs must be noise_multiplier x clipping_norm / sites.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from data_loaders.synthetic import generate_cohort
from fedtumor.core.model import build_model
from fedtumor.run.checkpoint import load_checkpoint
from tests import REPO

pytestmark = pytest.mark.e2e

ROUNDS, SITES, NOISE_MULTIPLIER, CLIPPING_NORM = 2, 2, 0.02, 0.05


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp-e2e")
    cohort = root / "cohort"
    generate_cohort(cohort, n_sites=SITES, n_subjects=6, seed=5, shape=64, n_test=2, progress=False)
    run_config = (
        f"num-server-rounds={ROUNDS} data-dir='{cohort}' output-dir='{root / 'runs'}' run-name='dp' "
        "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 fraction-evaluate=0.0 "
        f"dp-noise-multiplier={NOISE_MULTIPLIER} dp-clipping-norm={CLIPPING_NORM}"
    )
    completed = subprocess.run(
        [
            sys.executable,
            "scripts/simulate.py",
            "--num-supernodes",
            str(SITES),
            "--run-config",
            run_config,
            "--flwr-home",
            str(root / "flwr-home"),
        ],
        cwd=REPO,
        env={**os.environ, "FEDTUMOR_HOME": str(root / "home")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
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
