"""A live federation on 127.0.0.1: real SuperLink, nginx proxy and SuperNode processes, TLS, node authentication.

One SuperLink with TLS and SuperNode authentication behind nginx, which forwards only the
Fleet API; the SuperNodes connect through it. Site-1 and site-2 are registered, a third node
with an unregistered key is refused. Site-2's data folder holds a truncated file: its ClientApp
names it in an error reply while site-1's update is still aggregated. From the proxy's public
address `flwr ls`, `log`, `run` and `supernode register` are refused (403, logged); from the
SuperLink's own listener they work. Every process is stopped at the end, and none may be left.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from data_loaders.site_folders import export_heldout_folder, export_site_folders
from fedtumor.deployment.flwr_runs import SUCCESS_STATUS, stream_run, wait_for_run
from fedtumor.deployment.loopback import CONNECTION, PUBLIC_CONNECTION, LoopbackFederation
from fedtumor.deployment.processes import command_lines, descendants
from fedtumor.deployment.proxy import NGINX_ENV, nginx_binary, refused_requests
from fedtumor.security.certs import make_superlink_certificates
from fedtumor.security.node_keys import make_node_key
from tests import REPO

TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4"
pytestmark = pytest.mark.e2e
NO_NGINX = "nginx is not installed (apt-get install -y nginx-light; .ci/run installs it)"
needs_nginx = pytest.mark.skipif(nginx_binary() is None, reason=NO_NGINX)


def _one_line(completed: subprocess.CompletedProcess) -> str:
    return " ".join((completed.stdout + completed.stderr).split())


def _control_calls(federation: LoopbackFederation, connection: str, run_id: str, key, run_config: str) -> dict:
    """The Control API commands a researcher (or an intruder) would run, against one connection."""
    return {
        "ls": federation.flwr("ls", connection, "--run-id", run_id),
        "log": federation.flwr("log", run_id, connection, "--show"),
        "run": federation.flwr("run", str(REPO), connection, "--run-config", run_config),
        "supernode register": federation.flwr("supernode", "register", str(key), connection),
    }


def _listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc (address as /proc writes it)."""
    inodes = set()
    for fd in (Path("/proc") / str(pid) / "fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in (Path("/proc") / str(pid) / "net" / table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].rsplit(":", 1)
                ports.add((address, int(port, 16)))
    return ports


def _worker_facts(federation: LoopbackFederation, name: str) -> dict:
    """What the node worker of ``name`` did, what it listens on, and whether a stranger may claim its tasks."""
    supernode = federation.supernodes[name]
    runtime = f"127.0.0.1:{supernode.command[supernode.command.index('--port') + 1]}"
    worker = federation.workers[name]
    # In its own process: Flower's client answers a 401 by interrupting the process it runs in.
    code = f"from fedtumor.deployment.node_worker import NodeWorker; print(NodeWorker({runtime!r}, b'wrong').claim())"
    stranger = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return {
        "pid": worker.pid,
        "running": worker.running(),
        "listening": _listening_ports(worker.pid),
        "supernode_listening": _listening_ports(supernode.pid),
        "runtime_port": int(runtime.rsplit(":", 1)[1]),
        "stranger_claim": (stranger.returncode, stranger.stdout + stranger.stderr),
        "log": worker.log_text(),
        "secret_mode": os.stat(supernode.command[supernode.command.index("--superexec-auth-secret-file") + 1]).st_mode,
    }


@pytest.fixture(scope="module")
def live_federation(tmp_path_factory, two_site_cohort):
    if nginx_binary() is None:
        pytest.skip(NO_NGINX)
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
    keys = {name: make_node_key(root / "keys", name) for name in ("site-1", "site-2", "rogue", "late")}
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
        for name in ("site-1", "site-2"):  # site-1's ClientApp runs in a node worker, site-2's per message
            federation.start_supernode(name, sites[name], keys[name].private_key, worker=name == "site-1")
        results["statuses"] = federation.node_statuses()
        run_config = (
            f"num-server-rounds=1 min-available-nodes=2 min-train-replies=1 data-dir='{coordinator}' "
            f"output-dir='{root / 'runs'}' run-name='live' warm-up=true {TINY}"
        )
        lines: list[str] = []
        run_id = stream_run(CONNECTION, federation.env, run_config, app_dir=REPO, echo=lines.append)
        results["stream"] = "\n".join(lines)
        results["status"] = wait_for_run(run_id, CONNECTION, federation.env, timeout_s=600) if run_id else "no run id"
        # The Control API from outside (the proxy), then from the centre's machine (the SuperLink's listener).
        # The refused `run` submits a one-round tiny run; `ls` and `log` ask about the finished one.
        run_id = run_id or "0"
        results["public"] = _control_calls(federation, PUBLIC_CONNECTION, run_id, keys["late"].public_key, run_config)
        results["local"] = {
            "ls": federation.flwr("ls", CONNECTION, "--run-id", run_id),
            "log": federation.flwr("log", run_id, CONNECTION, "--show"),
            "supernode register": federation.flwr("supernode", "register", str(keys["late"].public_key), CONNECTION),
        }
        results["addresses"] = {"superlink": federation.address, "proxy": federation.fleet_address}
        results["supernode_commands"] = {name: process.command for name, process in federation.supernodes.items()}
        results["refused_log"] = refused_requests(federation.proxy_settings)
        results["access_log"] = federation.proxy_settings.access_log.read_text()
        results["proxy_pids"] = [federation.proxy.pid, *descendants(federation.proxy.pid)]
        results["superlink_command"] = federation.superlink.command
        results["superlink_log"] = federation.superlink.log_text()
        results["superlink_pid"] = federation.superlink.pid
        results["tree_before_close"] = descendants(federation.superlink.pid)
        results["worker"] = _worker_facts(federation, "site-1")
    finally:
        federation.close()
    results["left_over"] = list(command_lines(str(root)).values())
    results["proxy_left"] = sorted(set(results.get("proxy_pids", [])) & set(command_lines("nginx")))
    return results


def test_unregistered_node_is_refused(live_federation):
    # Flower logs "Exit Code: 305" but the process exits with status 1 (docs/deployment.md says so).
    assert live_federation["rogue_returncode"] == 1
    assert "Failed to activate SuperNode" in live_federation["rogue_log"] and "305" in live_federation["rogue_log"]
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
    # Both sites were asked to warm up before round 1; site 2's broken file failed that too.
    assert "warm-up: 1 of 2 sites ready" in live_federation["stream"], live_federation["stream"][-3000:]
    # Site 2 named its broken file; site 1's update was aggregated and scored.
    failures = json.dumps(summary["failed_replies"])
    broken = live_federation["broken_file"]
    assert f"{broken.parent.name}/{broken.name}" in failures  # relative to the site's folder, or absolute
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


def test_supernodes_reach_the_superlink_only_through_the_proxy(live_federation):
    proxy, superlink = live_federation["addresses"]["proxy"], live_federation["addresses"]["superlink"]
    assert proxy != superlink
    for command in live_federation["supernode_commands"].values():
        assert command[command.index("--superlink") + 1] == proxy
    # Node authentication passed through nginx: activation, messages in both directions, all answered 200.
    access = live_federation["access_log"]
    for call in ("activate-node", "pull-messages", "push-messages", "push-object", "pull-object"):
        assert f'"POST /v1/fleet/{call} HTTP/1.1" 200' in access, call
    forwarded = [line for line in access.splitlines() if "upstream=127.0.0.1:" in line]
    assert forwarded and all("/v1/fleet/" in line for line in forwarded)  # nothing else ever reached the SuperLink


def test_control_api_is_refused_from_the_public_address(live_federation):
    refused = live_federation["refused_log"]
    for command, path in (
        ("ls", "list-runs"),
        ("log", "stream-logs"),
        ("run", "start-run"),
        ("supernode register", "register-node"),
    ):
        completed = live_federation["public"][command]
        assert completed.returncode != 0, f"flwr {command}: {_one_line(completed)}"
        assert "403 Forbidden" in _one_line(completed), f"flwr {command}: {_one_line(completed)}"
        assert any(f'"POST /v1/control/{path} HTTP/1.1" 403' in line for line in refused), (path, refused)
    assert all("upstream=-" in line for line in refused)  # refused by nginx, never forwarded


def test_control_api_works_from_the_centres_own_machine(live_federation):
    # `flwr run` from here is how the round itself was submitted (test_round_completes_without_the_broken_site).
    local = live_federation["local"]
    assert local["ls"].returncode == 0 and SUCCESS_STATUS in _one_line(local["ls"]), _one_line(local["ls"])
    assert local["log"].returncode == 0 and "dice_wt" in local["log"].stdout, _one_line(local["log"])[-2000:]
    assert local["supernode register"].returncode == 0, _one_line(local["supernode register"])
    assert "403 Forbidden" not in _one_line(local["supernode register"])  # refused by the proxy would say so


def test_a_node_worker_runs_the_sites_clientapp_and_listens_on_nothing(live_federation):
    worker = live_federation["worker"]
    assert worker["running"]
    # Site 1's round-1 training ran in the worker (its update was aggregated: see the test above).
    tasks = [line for line in worker["log"].splitlines() if "node worker: task" in line]
    # One process: the warm-up before round 1 (it loaded the site), then round 1's training and evaluation.
    assert [t.split("(")[1].split(")")[0] for t in tasks] == ["query.warm_up", "train", "evaluate"], tasks
    assert all(t.endswith("completed") for t in tasks), tasks
    assert worker["listening"] == set()  # it only dials the SuperNode's Runtime API
    assert ("0100007F", worker["runtime_port"]) in worker["supernode_listening"]  # the SuperNode's, on 127.0.0.1
    returncode, output = worker["stranger_claim"]  # a process without the node's secret
    assert returncode != 0 and "401" in output, output[-2000:]
    assert stat.S_IMODE(worker["secret_mode"]) == 0o600


def test_every_process_is_stopped(live_federation):
    assert live_federation["tree_before_close"], "the SuperLink should have started helper processes"
    assert len(live_federation["proxy_pids"]) >= 2, "nginx should have run a master and a worker"
    assert live_federation["left_over"] == []
    assert live_federation["proxy_left"] == []


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


# slow: the live_federation fixture above already runs a TLS + node-auth deployment through the proxy with
# the same LoopbackFederation; this runs the whole script on top. `pytest -m slow` runs it.
@pytest.mark.slow
@needs_nginx
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
    assert (
        '"POST /v1/fleet/push-messages HTTP/1.1" 200'
        in (tmp_path / "work" / "logs" / "proxy" / "access.log").read_text()
    )
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


@needs_nginx
def test_local_federation_script_without_nginx_says_so_and_starts_nothing(tmp_path):
    completed = subprocess.run(
        ["bash", str(REPO / "scripts" / "local_federation.sh"), "--workdir", str(tmp_path / "work")],
        env={**os.environ, "FEDTUMOR_PYTHON": sys.executable, NGINX_ENV: str(tmp_path / "no-nginx-here")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1 and "nginx is not installed" in lines[0] and "--no-proxy" in lines[0], completed.stdout
    assert not (tmp_path / "work").exists()


@needs_nginx
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
