"""The simulation runner's checks before Flower starts, and the status line benchmarks read from it."""

import subprocess
import sys

from fedtumor.bench.probe import STATUS_LINE
from fedtumor.deployment.simulation import STATUS_PREFIX, main, simulation_command, write_flwr_config
from tests import REPO


def test_an_app_folder_without_a_flower_config_is_refused_in_one_line(tmp_path, capsys):
    assert main(["--app-dir", str(tmp_path), "--run-config", "num-server-rounds=1"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {tmp_path / 'pyproject.toml'}: no readable [tool.flwr.app.config] table " + (
        "(FileNotFoundError)\n"
    )
    assert not captured.out


def test_the_package_entry_point_refuses_a_bad_key_before_starting_flower(tmp_path):
    command = [*simulation_command(REPO), "--run-config", "num-server-round=2"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: unknown run-config key 'num-server-round' (did you mean 'num-server-rounds'?)"
    assert simulation_command(REPO)[:3] == [sys.executable, "-m", "fedtumor.deployment.simulation"]


def test_the_status_line_is_the_one_the_benchmarks_parse():
    match = STATUS_LINE.search(f"{STATUS_PREFIX} 123456789 status finished:completed after 12.3s")
    assert match is not None and match.group(1) == "finished:completed"


def test_flower_state_stays_in_memory(tmp_path):
    write_flwr_config(tmp_path / "home")
    text = (tmp_path / "home" / "config.toml").read_text()
    assert 'default = "local"' in text and 'address = ":local-in-memory:"' in text
