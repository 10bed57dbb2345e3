"""A live federation on 127.0.0.1: real SuperLink and SuperNode processes, TLS, node authentication.

One SuperLink with TLS and SuperNode authentication; site-1 and site-2 are registered,
a third node with an unregistered key is refused. Site-2's data folder holds a truncated
file: its ClientApp names it in an error reply while site-1's update is still aggregated.
Every process is stopped at the end, and none may be left.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from data_loaders.site_folders import export_heldout_folder, export_site_folders
from fedtumor.deployment.flwr_runs import SUCCESS_STATUS, stream_run, wait_for_run
from fedtumor.deployment.loopback import CONNECTION, LoopbackFederation
from fedtumor.deployment.processes import command_lines, descendants
from fedtumor.security.certs import make_superlink_certificates
from fedtumor.security.node_keys import make_node_key
from tests import REPO

TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live_federation(tmp_path_factory, two_site_cohort):
    root = tmp_path_factory.mktemp("live")
    cohort = two_site_cohort  # site folders link to it; the broken file is a private copy
    sites = export_site_folders(cohort, root / "sites")
    coordinator = export_heldout_folder(cohort, root / "coordinator")
    # Site 2's upload was cut short: a truncated FLAIR image (a real file, in its real folder).
    broken_subject = pd.read_csv(cohort / "partitioning.csv").query("Partition_ID == 2")["Subject_ID"].iloc[0]
    link = sites["site-2"] / broken_subject
    link.unlink()
    link.mkdir()
    for source in (cohort / broken_subject).iterdir():
        data = source.read_bytes()
        (link / source.name).write_bytes(data[:1000] if source.name.endswith("_flair.nii.gz") else data)
    broken_file = link / f"{broken_subject}_flair.nii.gz"

    certs = make_superlink_certificates(root / "certs", ["localhost"], ["127.0.0.1"])
    keys = {name: make_node_key(root / "keys", name) for name in ("site-1", "site-2", "rogue")}
    federation = LoopbackFederation(root / "work", certs, node_auth=True)
    federation.env["FEDTUMOR_HOME"] = str(root / "home")  # the ServerApp and ClientApps inherit it
    results = {"root": root, "broken_file": broken_file, "federation": federation}
    try:
        federation.start_superlink()
        results["registered"] = {name: federation.register_node(keys[name].public_key) for name in ("site-1", "site-2")}
        rogue = federation.start_supernode("rogue", sites["site-1"], keys["rogue"].private_key, wait=False)
        rogue.popen.wait(timeout=120)  # refused: it gives up instead of joining
        results["rogue_returncode"] = rogue.popen.returncode
        results["rogue_log"] = rogue.log_text()
        for name in ("site-1", "site-2"):
            federation.start_supernode(name, sites[name], keys[name].private_key)
        results["statuses"] = federation.node_statuses()
        run_config = (
            f"num-server-rounds=1 min-available-nodes=2 min-train-replies=1 data-dir='{coordinator}' "
            f"output-dir='{root / 'runs'}' run-name='live' {TINY}"
        )
        lines: list[str] = []
        run_id = stream_run(CONNECTION, federation.env, run_config, echo=lines.append)
        results["stream"] = "\n".join(lines)
        results["status"] = wait_for_run(run_id, CONNECTION, federation.env, timeout_s=600) if run_id else "no run id"
        results["superlink_command"] = federation.superlink.command
        results["superlink_log"] = federation.superlink.log_text()
        results["superlink_pid"] = federation.superlink.pid
        results["tree_before_close"] = descendants(federation.superlink.pid)
    finally:
        federation.close()
    results["left_over"] = list(command_lines(str(root)).values())
    return results


def test_unregistered_node_is_refused(live_federation):
    assert live_federation["rogue_returncode"] != 0
    assert "Failed to activate SuperNode" in live_federation["rogue_log"]
    registered = set(live_federation["registered"].values())
    assert set(live_federation["statuses"]) == registered  # the rogue node never became a node
    assert all(status == "online" for status in live_federation["statuses"].values())


def test_superlink_runs_with_tls_and_node_authentication(live_federation):
    command = live_federation["superlink_command"]
    assert "--enable-supernode-auth" in command and "--ssl-certfile" in command and "--insecure" not in command
    assert "Uvicorn running on https://127.0.0.1" in live_federation["superlink_log"]


def test_round_completes_without_the_broken_site(live_federation):
    assert live_federation["status"] == SUCCESS_STATUS, live_federation["stream"][-3000:]
    run_dir = live_federation["root"] / "runs" / "live"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 1 and summary["num_nodes"] == 2
    # Site 2 named its broken file; site 1's update was aggregated and scored.
    failures = json.dumps(summary["failed_replies"])
    assert str(live_federation["broken_file"]) in failures
    assert set(summary["sites"]) == {"site-1"}
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert not metrics.query("scope == 'site-1' and split == 'train'").empty
    assert metrics.query("scope == 'site-2'").empty
    # Round 1's model is site 1's update alone, and it was scored on the held-out subjects.
    rounds = {
        e["round"]: e
        for e in map(json.loads, (run_dir / "audit.jsonl").read_text().splitlines())
        if e["event"] == "round"
    }
    assert list(rounds[1]["train"]["updates"]) == ["site-1"]
    assert rounds[1]["model_sha256"] != rounds[0]["model_sha256"]
    assert summary["final"]["round"] == 1 and 0.0 <= summary["final"]["dice_wt"] <= 1.0
    assert (run_dir / "final_model.pt").exists()


def test_every_process_is_stopped(live_federation):
    assert live_federation["tree_before_close"], "the SuperLink should have started helper processes"
    assert live_federation["left_over"] == []


@pytest.fixture(scope="module")
def script_env(tmp_path_factory):
    """The script's environment; its cohort is cached in this FEDTUMOR_HOME across tests."""
    home = tmp_path_factory.mktemp("script-home")
    return {**os.environ, "FEDTUMOR_HOME": str(home), "FEDTUMOR_PYTHON": sys.executable}


def script_command(tmp_path, *extra):
    return [
        "bash",
        str(REPO / "scripts" / "local_federation.sh"),
        *("--sites", "2", "--subjects", "6", "--test-subjects", "1", "--out", str(tmp_path / "out")),
        *("--workdir", str(tmp_path / "work"), "--run-config", TINY),
        *extra,
    ]


def test_local_federation_script_end_to_end(tmp_path, script_env):
    """The one-command loopback federation, as a user runs it, on a tiny model."""
    completed = subprocess.run(
        script_command(tmp_path, "--rounds", "1", "--run-name", "script", "--keep"),
        env=script_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "finished:completed" in output and f"results: {tmp_path / 'out' / 'script'}" in output
    summary = json.loads((tmp_path / "out" / "script" / "summary.json").read_text())
    assert summary["num_nodes"] == 2 and set(summary["sites"]) == {"site-1", "site-2"}
    assert (tmp_path / "work" / "keys" / "site-1.key").exists()  # node auth was on
    assert "https://" in (tmp_path / "work" / "logs" / "superlink.log").read_text()
    assert list(command_lines(str(tmp_path)).values()) == []


def test_local_federation_script_rejects_a_bad_key_before_starting_anything(tmp_path):
    completed = subprocess.run(
        ["bash", str(REPO / "scripts" / "local_federation.sh"), "--workdir", str(tmp_path / "work")]
        + ["--run-config", "num-server-round=2"],
        env={**os.environ, "FEDTUMOR_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "unknown run-config key 'num-server-round'" in completed.stdout
    assert not (tmp_path / "work" / "logs").exists()


def test_ctrl_c_stops_every_process(tmp_path, script_env):
    log = tmp_path / "script.log"  # a file, not a pipe: no child can hold the test's pipe open
    with open(log, "w") as handle:
        process = subprocess.Popen(
            script_command(tmp_path, "--rounds", "50"), env=script_env, stdout=handle, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 600
        while "Successfully started run" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)  # the run is under way on the SuperLink
        process.wait(timeout=300)
    finally:
        if process.poll() is None:  # never leave a federation running behind a failed test
            process.terminate()
            process.wait(timeout=120)
    output = log.read_text()
    assert process.returncode == 130, output[-3000:]
    assert "interrupted; stopping every process" in output
    assert list(command_lines(str(tmp_path)).values()) == []
    assert not (tmp_path / "work").exists()  # the temporary keys and certificates are gone
