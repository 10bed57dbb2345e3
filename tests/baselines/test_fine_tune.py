"""FedAvg-FT: every site fine-tunes a run's final model; global and fine-tuned scores per site and as means."""

import json

import pytest
import torch
from typer.testing import CliRunner

from fedtumor.baselines.fine_tune import FINE_TUNE_PNG
from fedtumor.baselines.sites import load_sites
from fedtumor.baselines.trainer import test_cases as volume_cases
from fedtumor.cli import app
from fedtumor.core.config import read_run_config
from fedtumor.core.model import build_model
from fedtumor.core.training import evaluate_cases, resolve_device
from fedtumor.federation.personalised import score_summary
from fedtumor.run.checkpoint import save_checkpoint
from fedtumor.run.files import FINAL_MODEL_FILE, SUMMARY_FILE
from fedtumor.run.writer import RunWriter
from tests.e2e.simulation import TINY_MODEL


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, two_site_cohort):
    """A federated run folder as the ServerApp leaves it: config.json (with num-nodes) and final_model.pt."""
    root = tmp_path_factory.mktemp("fine-tune")
    config = read_run_config(f"data-dir='{two_site_cohort}' output-dir='{root}' augment=false {TINY_MODEL}")
    writer = RunWriter(root / "fedavg-run")
    writer.write_config({**config.to_run_config(), "num-nodes": 2, "run-id": 1})
    torch.manual_seed(0)
    model = build_model(config.model, config.base_filters)
    save_checkpoint(writer.model_path(FINAL_MODEL_FILE), model.state_dict(), config, 1)
    return config, model, writer.run_dir


def test_fine_tune_writes_global_and_fine_tuned_scores_per_site(finished_run, monkeypatch, tmp_path):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))
    config, model, run_dir = finished_run
    out = tmp_path / "ft"
    result = CliRunner().invoke(app, ["fine-tune", "--run", str(run_dir), "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["baseline"] == "fedavg-ft" and summary["epochs"] == 1
    assert (out / FINE_TUNE_PNG).stat().st_size > 0
    sites = {site.site_id: site for site in load_sites(config, 2)}
    assert set(summary["sites"]) == set(sites) == {"site-1", "site-2"}
    device = resolve_device(config.device)
    for site_id, scores in summary["sites"].items():
        # The global model's scores are those of the saved model itself; the fine-tuned model's differ.
        val = volume_cases(sites[site_id].val)
        expected = score_summary(evaluate_cases(model, val, config.patch_size, device)[0])
        assert scores["global_val"] == pytest.approx(expected)
        assert scores["personal_val"] != scores["global_val"]
        assert set(scores["personal_heldout"]) == set(expected)
        assert scores["num_val"] == len(val)
    mean = summary["mean"]
    weights = [summary["sites"][s]["num_val"] for s in sorted(sites)]
    expected_mean = sum(summary["sites"][s]["personal_val"]["mean_dice"] * w for s, w in zip(sorted(sites), weights))
    assert mean["personal_val"]["mean_dice"] == pytest.approx(expected_mean / sum(weights))
    assert summary["global_heldout"] is not None and mean["personal_heldout"] is not None


def test_fine_tune_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = CliRunner().invoke(app, ["fine-tune", "--run", str(tmp_path), "--epochs", "1"])
    assert result.exit_code == 2 and "config.json" in result.output and "Traceback" not in result.output
