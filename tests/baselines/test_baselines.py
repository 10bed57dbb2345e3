"""The pooled and local-only baselines: the run config a federation reads, the same budget, the run folder."""

import json
import math

import pandas as pd
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from typer.testing import CliRunner

from client_app.app import app as client_app
from data_loaders.round_patches import round_patch_batches
from data_loaders.synthetic import generate_cohort
from fedtumor.baselines.sites import load_sites
from fedtumor.cli import app
from fedtumor.core.config import read_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.core.losses import build_loss
from fedtumor.core.model import build_model
from fedtumor.core.training import train_site_round
from fedtumor.federation.conformance import site_instruction
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CONFIG_KEY,
    LEARNING_RATE_KEY,
    LOCAL_EPOCHS_KEY,
    SERVER_ROUND_KEY,
    SITE_ID_KEY,
    SITE_RECORD_KEY,
)
from fedtumor.run.files import FINAL_MODEL_FILE
from tests import REPO

TINY = "patch-size=32 samples-per-volume=2 batch-size=1 base-filters=4 queue-length=4 augment=false"


def test_run_config_is_pyproject_defaults_plus_flower_style_overrides():
    from fedtumor.core.config import app_config_table

    shipped = app_config_table(REPO)
    config = read_run_config("num-server-rounds=3 data-dir='/data/x' learning-rate=0.5", REPO)
    assert config.num_server_rounds == 3 and config.data_dir == "/data/x" and config.learning_rate == 0.5
    assert config.patch_size == shipped["patch-size"] and config.spacing_mm == shipped["spacing-mm"]
    with pytest.raises(
        ConfigError, match="unknown run-config key 'num-server-round' .did you mean 'num-server-rounds'"
    ):
        read_run_config("num-server-round=3", REPO)
    with pytest.raises(ConfigError, match="run-config key 'data-dir': 'rel' must be an absolute path"):
        read_run_config("data-dir='rel'", REPO)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    generate_cohort(root / "cohort", n_sites=2, n_subjects=6, seed=3, shape=64, n_test=1, progress=False)
    return root


@pytest.fixture
def home(cohort, monkeypatch):
    monkeypatch.setenv("FEDTUMOR_HOME", str(cohort / "home"))
    return cohort


def invoke(*args):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def held_out_rows(run_dir, scope="global"):
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return metrics[(metrics.scope == scope) & (metrics.split == "test")]


def test_centralized_trains_on_every_sites_training_subjects_and_writes_a_run_folder(home):
    run_config = (
        f"num-server-rounds=2 data-dir='{home / 'cohort'}' output-dir='{home / 'runs'}' run-name='pooled' {TINY}"
    )
    result = invoke("centralized", "--run-config", run_config, "--no-progress", "--torch-threads", "2")
    assert result.exit_code == 0, result.output
    run_dir = home / "runs" / "pooled"
    for name in ("config.json", "metrics.csv", "summary.json", "final_model.pt", "best_model.pt", "dice_per_round.png"):
        assert (run_dir / name).stat().st_size > 0, name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strategy"] == "centralized" and summary["rounds"] == 2
    assert set(summary["sites"]) == {"site-1", "site-2"}
    assert all(math.isfinite(summary["final"][k]) for k in ("dice_et", "dice_tc", "dice_wt", "hd95_wt"))
    assert sorted(held_out_rows(run_dir).query("metric == 'dice_wt'")["round"]) == [0, 1, 2]
    # The budget: every round sees each pooled training subject samples-per-volume times.
    metrics = pd.read_csv(run_dir / "metrics.csv")
    patches = metrics[(metrics.split == "train") & (metrics.metric == "num_patches")]
    assert patches["value"].tolist() == [2 * sum(summary["sites"].values())] * 2
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["baseline"] == "centralized" and config["patch-size"] == 32


def test_local_trains_one_model_per_site_on_the_same_budget_and_reports_their_mean(home):
    run_config = (
        f"num-server-rounds=1 data-dir='{home / 'cohort'}' output-dir='{home / 'runs'}' run-name='local' {TINY}"
    )
    result = invoke("local", "--run-config", run_config, "--no-progress", "--torch-threads", "2")
    assert result.exit_code == 0, result.output
    run_dir = home / "runs" / "local"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strategy"] == "local" and set(summary["per_site_final"]) == {"site-1", "site-2"}
    for site, subjects in summary["sites"].items():
        site_dir = run_dir / site
        assert (site_dir / "final_model.pt").is_file()
        site_metrics = pd.read_csv(site_dir / "metrics.csv")
        patches = site_metrics[(site_metrics.split == "train") & (site_metrics.metric == "num_patches")]
        assert patches["value"].tolist() == [2 * subjects]  # its own subjects only
    mean = held_out_rows(run_dir).query("metric == 'dice_wt'").set_index("round")["value"]
    per_site = [
        held_out_rows(run_dir, s).query("metric == 'dice_wt'").set_index("round")["value"] for s in ("site-1", "site-2")
    ]
    assert sorted(mean.index) == [0, 1]
    assert mean.to_numpy() == pytest.approx(((per_site[0] + per_site[1]) / 2).to_numpy())
    assert summary["final"]["dice_wt"] == pytest.approx(mean[1])


def test_a_bad_key_or_a_missing_site_count_is_one_line_and_exit_2(home):
    result = CliRunner().invoke(app, ["centralized", "--run-config", "num-server-round=2", "--no-progress"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: unknown run-config key 'num-server-round' (did you mean 'num-server-rounds'?)"
    ]
    result = CliRunner().invoke(app, ["local", "--run-config", "synth-sites=0", "--no-progress"])
    assert result.exit_code == 2 and "give --sites" in result.output
    run_config = f"data-dir='{home / 'cohort'}' output-dir='{home / 'runs'}' run-name='x' {TINY}"
    result = CliRunner().invoke(app, ["local", "--run-config", run_config, "--only", "site-9", "--no-progress"])
    assert result.exit_code == 2 and "no site site-9 in this cohort (sites: site-1, site-2)" in result.output


def site_train_message(config, server_round: int) -> Message:
    """The ServerApp's round-``server_round`` instruction with its initial global model, as a site receives it."""
    torch.manual_seed(config.seed)  # the ServerApp's initial model
    initial = ArrayRecord(build_model(config.model, config.base_filters).state_dict())
    settings = {
        SERVER_ROUND_KEY: server_round,
        LEARNING_RATE_KEY: config.learning_rate,
        LOCAL_EPOCHS_KEY: config.local_epochs,
    }
    content = RecordDict({ARRAYS_KEY: initial, CONFIG_KEY: ConfigRecord(settings)})
    return site_instruction(1, content, group_id=str(server_round))


def test_a_local_baseline_trains_exactly_like_its_federated_site(home):
    run_config = (
        f"num-server-rounds=1 data-dir='{home / 'cohort'}' output-dir='{home / 'runs'}' run-name='like-a-site' "
        + TINY.replace("augment=false", "augment=true")  # augmentation draws from the seeded generator too
    )
    result = invoke("local", "--run-config", run_config, "--only", "site-1", "--no-progress", "--torch-threads", "2")
    assert result.exit_code == 0, result.output
    baseline = torch.load(home / "runs" / "like-a-site" / "site-1" / FINAL_MODEL_FILE, weights_only=True)
    config = read_run_config(run_config)
    node_config = {"partition-id": 0, "num-partitions": 2}
    run_config_record = config.to_run_config()
    context = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=run_config_record)
    reply = client_app(site_train_message(config, server_round=1), context)
    assert not reply.has_error(), reply.error
    assert reply.content[SITE_RECORD_KEY][SITE_ID_KEY] == "site-1"
    federated = reply.content[ARRAYS_KEY].to_torch_state_dict()
    assert list(federated) == list(baseline["state_dict"])
    for name, tensor in federated.items():
        assert torch.equal(tensor, baseline["state_dict"][name]), name
    # The same subjects under another site's patch seed train another model.
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.base_filters)
    site_1 = load_sites(config, 2)[0]
    batches = round_patch_batches(site_1.train, config, "site-2", 1)
    device = torch.device("cpu")
    train_site_round(
        model, batches, config.local_epochs, build_loss(config.loss), device, learning_rate=config.learning_rate
    )
    assert not all(torch.equal(model.state_dict()[name], tensor) for name, tensor in federated.items())
