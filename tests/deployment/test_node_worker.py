"""The node worker's pieces: its secret, its module hygiene between FABs, its argument checks.

The worker itself runs live in tests/e2e/test_deployment_e2e.py (site-1's round, a stranger's
claim refused, nothing listening) and tests/e2e/test_node_loss_e2e.py (5 rounds in one process).
"""

import importlib
import stat
import subprocess
import sys

import pytest

from fedtumor.deployment.node_worker import NodeWorker, forget_app_modules
from fedtumor.deployment.worker_launch import SECRET_BYTES, supernode_flags, worker_command, write_secret
from tests import REPO


def test_the_secret_is_fresh_random_bytes_only_its_owner_reads(tmp_path):
    first = write_secret(tmp_path / "node" / "superexec.secret").read_bytes()
    path = write_secret(tmp_path / "node" / "superexec.secret")  # a restart replaces it
    assert len(first) == SECRET_BYTES and path.read_bytes() != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_launch_commands_name_the_secret_and_the_supernode(tmp_path):
    secret = tmp_path / "s"
    assert supernode_flags(secret) == ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]
    command = worker_command("127.0.0.1:9094", secret, 4242)
    assert command[command.index("--parent-pid") + 1] == "4242"
    assert command[command.index("--runtime-api-address") + 1] == "127.0.0.1:9094"


def _package(root, version: str) -> None:
    (root / "demo_fab_pkg").mkdir(parents=True)
    (root / "demo_fab_pkg" / "__init__.py").write_text(f"VERSION = {version!r}\n")


def test_a_new_fab_runs_its_own_code_not_the_previous_ones(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    _package(old, "old")
    _package(new, "new")
    monkeypatch.syspath_prepend(str(old))
    assert importlib.import_module("demo_fab_pkg").VERSION == "old"
    monkeypatch.syspath_prepend(str(new))
    assert importlib.import_module("demo_fab_pkg").VERSION == "old"  # what Flower's loader would reuse
    dropped = forget_app_modules(new)
    assert dropped == ["demo_fab_pkg"] and "json" in sys.modules  # libraries stay loaded
    assert importlib.import_module("demo_fab_pkg").VERSION == "new"
    assert forget_app_modules(new) == []  # loaded from the app's own folder: kept
    del sys.modules["demo_fab_pkg"]


@pytest.mark.parametrize(("secret", "poll", "needle"), [(b"", 0.05, "secret is empty"), (b"s", 0.0, "poll_interval_s")])
def test_bad_settings_are_refused_up_front(secret, poll, needle):
    with pytest.raises(ValueError, match=needle):
        NodeWorker("127.0.0.1:9094", secret, poll)


def test_an_unreadable_secret_is_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "nope.secret"
    command = [sys.executable, "-m", "fedtumor.deployment.node_worker", "--runtime-api-address", "127.0.0.1:9"]
    done = subprocess.run([*command, "--secret-file", str(missing)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and str(missing) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
