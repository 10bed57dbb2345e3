"""The local-only baseline's cross-site matrix, and `fedtumor cross-site` on its finished run folder.

Each cell must be what the evaluating site's own ClientApp reports for that site model on its
validation subjects: the diagonal is each site's own validation score.
"""

import json
import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from typer.testing import CliRunner

from client_app.app import app as client_app
from fedtumor.cli import app
from fedtumor.core.config import read_run_config
from fedtumor.federation.conformance import site_instruction
from fedtumor.federation.wire import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY
from fedtumor.run.cross_site import CROSS_SITE_METRICS, cross_site_metrics, local_model, read_cross_site
from fedtumor.run.files import CROSS_SITE_FILE, CROSS_SITE_PNG, CROSS_SITE_SCORES_FILE, FINAL_MODEL_FILE

TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=4 augment=false"
SITES = ["site-1", "site-2"]


def invoke(*args):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def local_run(two_site_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("local-cross-site")
    run_config = (
        f"num-server-rounds=1 data-dir='{two_site_cohort}' output-dir='{root / 'runs'}' run-name='local' "
        f"cross-site-eval=true {TINY}"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDTUMOR_HOME", str(root / "home"))
        result = invoke("local", "--run-config", run_config, "--no-progress", "--torch-threads", "2")
    assert result.exit_code == 0, result.output
    return root, read_run_config(run_config), root / "runs" / "local"


def site_validation(config, model_path, partition: int) -> dict[str, float]:
    """The evaluating site's own ClientApp evaluate reply for the saved model."""
    state = torch.load(model_path, weights_only=True)["state_dict"]
    content = RecordDict({ARRAYS_KEY: ArrayRecord(state), CONFIG_KEY: ConfigRecord({})})
    node_config = {"partition-id": partition, "num-partitions": len(SITES)}
    context = Context(
        run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=config.to_run_config()
    )
    message = site_instruction(1, content, "evaluate")
    reply = client_app(message, context)
    assert not reply.has_error(), reply.error
    return cross_site_metrics({k: float(v) for k, v in reply.content[METRICS_KEY].items()})


def test_each_local_model_is_scored_on_every_sites_validation_subjects(local_run, monkeypatch):
    root, config, run_dir = local_run
    monkeypatch.setenv("FEDTUMOR_HOME", str(root / "home"))
    matrix = read_cross_site(run_dir)
    assert matrix.shape == (2, 2)
    assert list(matrix.index) == [local_model(site) for site in SITES]
    assert list(matrix.columns) == SITES
    for model_site in SITES:
        for partition, evaluating_site in enumerate(SITES):
            expected = site_validation(config, run_dir / model_site / FINAL_MODEL_FILE, partition)
            cell = matrix.loc[local_model(model_site), evaluating_site]
            assert cell == pytest.approx(expected["mean_dice"]), (model_site, evaluating_site)
            assert math.isfinite(cell) and 0.0 <= cell <= 1.0
    assert (run_dir / CROSS_SITE_PNG).is_file() and (run_dir / CROSS_SITE_SCORES_FILE).is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["cross_site"]["mean_dice"] == {
        model: dict(row) for model, row in matrix.to_dict(orient="index").items()
    }  # the same cells, full precision


def test_cross_site_command_rescores_the_finished_run_to_the_same_matrix(local_run, monkeypatch):
    root, _, run_dir = local_run
    monkeypatch.setenv("FEDTUMOR_HOME", str(root / "home"))
    before = read_cross_site(run_dir)
    (run_dir / CROSS_SITE_FILE).unlink()
    result = invoke("cross-site", str(run_dir), "--no-progress", "--torch-threads", "2")
    assert result.exit_code == 0, result.output
    assert "local-only model" in result.output
    after = read_cross_site(run_dir)
    assert list(after.index) == list(before.index) and list(after.columns) == list(before.columns)
    assert after.to_numpy() == pytest.approx(before.to_numpy())
    assert set(read_long_metrics(run_dir)) == set(CROSS_SITE_METRICS)


def read_long_metrics(run_dir):
    import pandas as pd

    return pd.read_csv(run_dir / CROSS_SITE_SCORES_FILE)["metric"].unique()


def test_cross_site_command_names_what_is_wrong_in_one_line(tmp_path):
    result = invoke("cross-site", str(tmp_path / "nowhere"), "--no-progress")
    assert result.exit_code == 2
    assert "no config.json" in result.output and "Traceback" not in result.output
