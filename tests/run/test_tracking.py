"""Experiment tracking against a real MLflow store, read back with MLflow's own client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fedtumor.core.config import RunConfig, load_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.run.files import TRACKING_DB_FILE, TRACKING_RUN_FILE
from fedtumor.run.tracking import (
    EXPERIMENT_NAME,
    MlflowTracker,
    NoTracker,
    default_tracking_uri,
    metric_key,
    open_tracker,
    read_tracking_record,
)
from fedtumor.run.writer import RunWriter, read_metrics
from tests import REPO


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(point.step, point.value) for point in client.get_metric_history(run_id, key)]


def tracked_writer(run_dir: Path, **tracker_options) -> RunWriter:
    return RunWriter(run_dir, exist_ok=True, tracker=MlflowTracker(run_dir, **tracker_options))


def test_metric_keys_encode_split_scope_and_metric():
    assert metric_key("global", "test", "dice_wt") == "test/dice_wt"
    assert metric_key("site-1", "val", "dice_wt") == "val/site-1/dice_wt"
    # Characters MLflow refuses become "_"; "/" only ever separates the parts.
    assert metric_key("site/2:b", "train", "..") == "train/site_2_b/_"


def test_tracker_logs_params_and_metrics_that_mlflow_reads_back(tmp_path):
    run_dir = tmp_path / "fedavg-demo"
    run_dir.mkdir()
    tracker = MlflowTracker(run_dir, tags={"fedtumor.strategy": "fedavg"})
    tracker.start()
    tracker.log_params({"learning-rate": 0.01, "strategy": "fedavg", "sites": {"site-1": 3}, "augment": True})
    tracker.log_metrics(0, "global", "test", {"dice_wt": 0.125, "hd95_wt": float("nan")})
    tracker.log_metrics(1, "global", "test", {"dice_wt": 0.5, "hd95_wt": 12.0})
    tracker.log_metrics(1, "site-1", "val", {"dice_wt": 0.25})
    tracker.finish(failed=False)

    assert (run_dir / TRACKING_DB_FILE).is_file()
    client = MlflowClient(tracking_uri=default_tracking_uri(run_dir))
    run = client.get_run(tracker.run_id)
    assert run.info.run_name == "fedavg-demo"
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT_NAME
    assert run.data.params == {
        "learning-rate": "0.01",
        "strategy": "fedavg",
        "sites": '{"site-1": 3}',
        "augment": "true",
    }
    assert run.data.tags["fedtumor.strategy"] == "fedavg"
    assert history(client, tracker.run_id, "test/dice_wt") == [(0, 0.125), (1, 0.5)]
    assert history(client, tracker.run_id, "val/site-1/dice_wt") == [(1, 0.25)]
    hd95 = history(client, tracker.run_id, "test/hd95_wt")
    assert [step for step, _ in hd95] == [0, 1] and hd95[0][1] != hd95[0][1] and hd95[1][1] == 12.0  # NaN stays NaN
    assert read_tracking_record(run_dir)["run_id"] == tracker.run_id


def test_writer_mirrors_every_metrics_csv_row_and_ends_a_failed_run_failed(tmp_path):
    run_dir = tmp_path / "run"
    writer = tracked_writer(run_dir)
    writer.write_config({"num-server-rounds": 2, "strategy": "fedprox"})
    for server_round in (0, 1):
        writer.add_metrics(server_round, "global", "test", {"dice_wt": 0.1 + server_round, "dice_et": 0.3})
        writer.add_metrics(server_round, "site-2", "train", {"loss": 1.0 / (server_round + 1)})
    writer.write_summary({"status": "failed", "error": "too few replies"})

    client = MlflowClient(tracking_uri=default_tracking_uri(run_dir))
    run = client.get_run(writer.tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.params == {"num-server-rounds": "2", "strategy": "fedprox"}
    rows = read_metrics(run_dir)
    assert len(rows) == 6
    for (scope, split, name), group in rows.groupby(["scope", "split", "metric"]):
        logged = history(client, run.info.run_id, metric_key(scope, split, name))
        assert logged == list(zip(group["round"], group["value"]))
    assert set(run.data.metrics) == {"test/dice_wt", "test/dice_et", "train/site-2/loss"}


def test_a_resumed_run_continues_its_mlflow_run(tmp_path):
    run_dir = tmp_path / "run"
    first = tracked_writer(run_dir)
    first.write_config({"num-server-rounds": 3})
    first.add_metrics(1, "global", "test", {"dice_wt": 0.2})
    first.write_summary({"status": "failed"})
    run_id = first.tracker.run_id

    resumed = tracked_writer(run_dir, resume=True)
    assert resumed.tracker.run_id == run_id and resumed.tracker.continued
    resumed.add_metrics(2, "global", "test", {"dice_wt": 0.4})
    resumed.write_summary({"status": "completed"})

    client = MlflowClient(tracking_uri=default_tracking_uri(run_dir))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["fedtumor.resumed"] == "true"
    assert history(client, run_id, "test/dice_wt") == [(1, 0.2), (2, 0.4)]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_a_resumed_run_without_a_recorded_mlflow_run_starts_a_new_one_with_the_config(tmp_path):
    run_dir = tmp_path / "run"
    RunWriter(run_dir).write_config({"num-server-rounds": 3, "seed": 7})  # the first part ran untracked

    resumed = tracked_writer(run_dir, resume=True)
    assert not resumed.tracker.continued
    resumed.add_metrics(2, "global", "test", {"dice_wt": 0.4})
    resumed.write_summary({"status": "completed"})

    client = MlflowClient(tracking_uri=default_tracking_uri(run_dir))
    run = client.get_run(resumed.tracker.run_id)
    assert run.data.params == {"num-server-rounds": "3", "seed": "7"}
    assert run.data.tags["fedtumor.resumed"].startswith("true (new MLflow run")
    assert read_tracking_record(run_dir)["run_id"] == run.info.run_id


def test_a_tracking_uri_sends_the_run_to_that_store_not_the_run_folder(tmp_path):
    store_uri = "sqlite:///" + (tmp_path / "shared.db").as_posix()
    config = load_run_config({"tracking": "mlflow", "tracking-uri": store_uri, "strategy": "krum"})
    run_dir = tmp_path / "krum-1"
    writer = RunWriter(run_dir, tracker=open_tracker(config, run_dir))
    writer.add_metrics(0, "global", "val", {"dice_tc": 0.75})
    writer.write_summary({"status": "completed"})

    assert not (run_dir / TRACKING_DB_FILE).exists()
    assert json.loads((run_dir / TRACKING_RUN_FILE).read_text())["tracking_uri"] == store_uri
    client = MlflowClient(tracking_uri=store_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    assert run.info.run_name == "krum-1" and run.data.tags["fedtumor.strategy"] == "krum"
    assert history(client, run.info.run_id, "val/dice_tc") == [(0, 0.75)]


def test_a_store_that_cannot_be_opened_is_one_config_error_naming_tracking_uri(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    unusable = "sqlite:///" + (tmp_path / "a-file" / "mlflow.db").as_posix()
    with pytest.raises(ConfigError, match=r"^run-config key 'tracking-uri': cannot log to MLflow at sqlite:") as error:
        RunWriter(tmp_path / "run", tracker=MlflowTracker(tmp_path / "run", tracking_uri=unusable))
    assert "\n" not in str(error.value)


def test_missing_mlflow_is_a_config_error_naming_tracking(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # what an install without the extra sees
    with pytest.raises(ConfigError, match=r"^run-config key 'tracking': .*install fedtumor\[tracking\]$"):
        open_tracker(RunConfig(tracking="mlflow"), tmp_path)


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        ({"tracking": "wandb"}, r"^run-config key 'tracking': 'wandb' is not one of '' \(off\), 'mlflow'$"),
        (
            {"tracking-uri": "http://mlflow:5000"},
            r"^run-config key 'tracking-uri': applies with tracking='mlflow' only$",
        ),
        (
            {"tracking": "mlflow", "tracking-uri": "/tmp/mlruns"},
            r"^run-config key 'tracking-uri': '/tmp/mlruns' is not a URI",
        ),
        ({"tracking": "mlflow", "tracking-uri": 5}, r"^run-config key 'tracking-uri': expected str"),
    ],
)
def test_bad_tracking_keys_are_refused_naming_the_key(run_config, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(run_config)


def test_tracking_is_off_by_default_and_then_never_imports_mlflow(tmp_path):
    assert RunConfig().tracking == "" and RunConfig().tracking_uri == ""
    script = (
        "import sys\n"
        "from fedtumor.core.config import RunConfig\n"
        "from fedtumor.run.tracking import NoTracker, open_tracker\n"
        "from fedtumor.run.writer import RunWriter\n"
        f"run_dir = {str(tmp_path / 'run')!r}\n"
        "tracker = open_tracker(RunConfig(), run_dir)\n"
        "assert isinstance(tracker, NoTracker)\n"
        "writer = RunWriter(run_dir, tracker=tracker)\n"
        "writer.write_config({'seed': 0}); writer.add_metrics(0, 'global', 'test', {'dice_wt': 0.5})\n"
        "writer.write_summary({'status': 'completed'})\n"
        "assert not any(name == 'mlflow' or name.startswith('mlflow.') for name in sys.modules), 'mlflow imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["config.json", "metrics.csv", "summary.json"]
    assert isinstance(RunWriter(tmp_path / "other").tracker, NoTracker)


def test_tracking_keys_are_documented():
    text = (REPO / "docs" / "configuration.md").read_text()
    assert "`tracking`" in text and "`tracking-uri`" in text and (REPO / "docs" / "tracking.md").is_file()
