"""A run folder holding a failed run (its summary says so) can be resumed, never taken by a new run."""

import json

import numpy as np
import pytest

from fedtumor.core.config import RunConfig, app_config_table, load_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.run.files import SUMMARY_FILE
from fedtumor.run.folder import preflight, run_dir_for
from fedtumor.run.resume import ResumeState, rng_state, save_resume_state
from fedtumor.run.writer import RunWriter
from tests import REPO


@pytest.fixture
def failed_run(tmp_path):
    """The folder a run leaves when round 2 failed: config, rows, audit log, resume state of round 1, summary."""
    run_dir = tmp_path / "runs" / "study"
    config = load_run_config({**app_config_table(REPO), "output-dir": str(tmp_path / "runs"), "run-name": "study"})
    writer = RunWriter(run_dir)
    writer.write_config({**config.to_run_config(), "num-nodes": 3})
    writer.add_metrics(round=1, scope="global", split="test", metrics={"dice_wt": 0.5})
    (run_dir / "audit.jsonl").write_text('{"index":0}\n')
    save_resume_state(run_dir, ResumeState(1, {"w": np.ones(3, np.float32)}, {}, {}, rng_state(), "0" * 64))
    writer.write_summary({"status": "failed", "error": "RoundFailedError: round 2: ...", "last_completed_round": 1})
    return run_dir, config


def test_a_failed_run_is_resumed_from_its_folder(failed_run):
    run_dir, config = failed_run
    resumed = config.replace(resume=str(run_dir), num_server_rounds=3)
    preflight(resumed)  # no error: the failed summary does not make the folder finished
    assert run_dir_for(resumed, "ignored") == run_dir
    assert json.loads((run_dir / SUMMARY_FILE).read_text())["status"] == "failed"  # checks leave it as it was


def test_a_new_run_refuses_the_folder_of_a_failed_run(failed_run):
    run_dir, config = failed_run
    (run_dir / "metrics.csv").unlink()  # the summary alone already marks the folder as taken
    (run_dir / "audit.jsonl").unlink()
    (run_dir / "config.json").unlink()
    with pytest.raises(ConfigError, match=f"{run_dir} already holds a run \\({SUMMARY_FILE}\\)"):
        preflight(config)
    with pytest.raises(ConfigError, match="already holds a run"):
        run_dir_for(RunConfig(output_dir=config.output_dir, run_name="study"), "ignored")
