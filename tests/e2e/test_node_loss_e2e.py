"""A SuperNode killed mid-round, and a node key revoked mid-round, in a live federation.

Three registered sites (TLS, node authentication, 127.0.0.1), ``min-available-nodes=3`` and
``min-train-replies=2``. Site 3's SuperNode and everything it started are SIGKILLed once round
2 has begun, and started again with the same key once round 3 has begun. Round 2 must close
with the two other sites' updates as soon as Flower's heartbeat declares the node unavailable
(well within ``round-timeout-s``, set to 20 minutes), record one failure named ``site-3``,
round 3 must go ahead with the two connected sites instead of waiting for the third, and site
3 must train again in round 4. Once round 4 has begun, the centre revokes site 2's key
(``fedtumor centre revoke``): the SuperLink refuses its reply, its SuperNode shuts down, the
audit log says ``node-revoked`` for site-2, and round 5 asks only the other two. Every process
is stopped at the end.
"""

import json
import subprocess
import time

import pytest

from fedtumor.deployment.flwr_runs import SUCCESS_STATUS, stream_run, wait_for_run
from fedtumor.deployment.loopback import CONNECTION, LoopbackFederation
from fedtumor.deployment.processes import command_lines, descendants
from tests import REPO
from tests.e2e.loopback_sites import loopback_sites

pytestmark = pytest.mark.e2e  # the fault test CI runs in deployment (3-4 minutes)
TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4"
ROUND_TIMEOUT_S = 1200.0
SITES = ("site-1", "site-2", "site-3")


@pytest.fixture(scope="module")
def lost_node_run(tmp_path_factory, three_site_cohort):
    root = tmp_path_factory.mktemp("node-loss")
    setup = loopback_sites(three_site_cohort, root, SITES)
    sites, coordinator, certs, keys = setup.sites, setup.coordinator, setup.certs, setup.keys
    federation = LoopbackFederation(root / "work", certs, node_auth=True, proxy=False)
    federation.env["FEDTUMOR_HOME"] = str(root / "home")
    events: dict[str, float] = {}
    lines: list[str] = []
    node_ids: dict[str, str] = {}

    def follow(line: str) -> None:
        lines.append(line)
        if "[ROUND 2/" in line and "killed" not in events:
            time.sleep(3)  # the round's messages are out: the node dies holding one
            federation.supernodes["site-3"].kill()  # as a power cut would
            events["killed"] = time.monotonic()
        elif "round 2 closed" in line:
            events["round_2_closed"] = time.monotonic()
        elif "[ROUND 3/" in line and "restarted" not in events:  # sampled without it: now it comes back
            federation.start_supernode("site-3", sites["site-3"], keys["site-3"].private_key)
            events["restarted"] = time.monotonic()
        elif "[ROUND 4/" in line and "revoked" not in events:
            time.sleep(3)  # site-2 holds the round's message
            revoke = ["fedtumor", "centre", "revoke", node_ids["site-2"], "--reason", "key leaked"]
            revoked = subprocess.run(revoke, env=federation.env, capture_output=True, text=True, timeout=120)
            events["revoke_output"] = revoked.stdout + revoked.stderr
            events["revoked"] = time.monotonic()

    results = {"root": root, "events": events}
    try:
        federation.start_superlink()
        for name in SITES:  # site-1, never lost, runs its ClientApp in a node worker for all 5 rounds
            node_ids[name] = federation.register_node(keys[name].public_key)
            federation.start_supernode(name, sites[name], keys[name].private_key, worker=name == "site-1")
        run_config = (
            f"num-server-rounds=5 min-available-nodes=3 min-train-replies=2 fraction-evaluate=0.0 "
            f"round-timeout-s={ROUND_TIMEOUT_S} data-dir='{coordinator}' output-dir='{root / 'runs'}' "
            f"run-name='lost' {TINY}"
        )
        run_id = stream_run(CONNECTION, federation.env, run_config, app_dir=REPO, echo=follow)
        results["status"] = wait_for_run(run_id, CONNECTION, federation.env, timeout_s=900) if run_id else "no run id"
        results["stream"] = "\n".join(lines)
        results["tree_before_close"] = descendants(federation.superlink.pid)
        results["site_2_running"] = federation.supernodes["site-2"].running()
        results["site_2_log"] = federation.supernodes["site-2"].log_text()
        results["site_1_worker_log"] = federation.workers["site-1"].log_text()
    finally:
        federation.close()
    results["left_over"] = list(command_lines(str(root)).values())
    return results


def rounds(run_dir) -> dict[int, dict]:
    entries = map(json.loads, (run_dir / "audit.jsonl").read_text().splitlines())
    return {entry["round"]: entry for entry in entries if entry["event"] == "round"}


def test_the_round_closes_without_the_dead_node_and_names_it_once(lost_node_run):
    assert lost_node_run["status"] == SUCCESS_STATUS, lost_node_run["stream"][-3000:]
    run_dir = lost_node_run["root"] / "runs" / "lost"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [(f["round"], f["phase"], f["site"]) for f in summary["failed_replies"]][0] == (2, "train", "site-3")
    assert "Node Unavailable" in summary["failed_replies"][0]["error"]
    assert [f["round"] for f in summary["failed_replies"]] == [2, 4]  # and the revoked site's round-4 reply
    audit = rounds(run_dir)
    assert sorted(audit[2]["train"]["updates"]) == ["site-1", "site-2"]
    events = lost_node_run["events"]
    waited = events["round_2_closed"] - events["killed"]
    assert waited < ROUND_TIMEOUT_S / 4, f"round 2 closed {waited:.0f} s after the node died"


def test_the_next_round_goes_ahead_with_the_connected_sites_and_the_restarted_node_trains_again(lost_node_run):
    audit = rounds(lost_node_run["root"] / "runs" / "lost")
    assert sorted(audit[3]["train"]["asked"]) == ["site-1", "site-2"]
    assert sorted(audit[4]["train"]["updates"]) == ["site-1", "site-3"], audit[4]["train"]  # site-2: revoked
    assert "Waiting for nodes to connect" not in lost_node_run["stream"].split("round 2 closed", 1)[-1]


def test_a_revoked_key_is_refused_and_the_audit_log_says_so(lost_node_run):
    run_dir = lost_node_run["root"] / "runs" / "lost"
    assert "revoked node" in lost_node_run["events"]["revoke_output"]
    entries = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    revoked = [e for e in entries if e["event"] == "node-revoked"]
    assert [(e["round"], e["site"], e["reason"]) for e in revoked] == [(4, "site-2", "key leaked")]
    audit = rounds(run_dir)
    assert "site-2" not in audit[4]["train"]["updates"] and "site-2" in audit[4]["train"]["failed"]
    assert sorted(audit[5]["train"]["asked"]) == ["site-1", "site-3"]
    assert not lost_node_run["site_2_running"]  # refused (401), the SuperNode shut itself down
    # Flower answers the 401 by interrupting its own SuperNode, which may log no status code: the log was read
    # before the test stopped anything, so this shutdown is the SuperNode's own.
    assert "SuperNode terminated gracefully" in lost_node_run["site_2_log"]


def test_one_node_worker_process_ran_every_round_of_its_site(lost_node_run):
    log = lost_node_run["site_1_worker_log"]
    assert log.count("preloaded the ClientApp's libraries") == 1  # one process, started once
    tasks = [line for line in log.splitlines() if "node worker: task" in line]
    assert len(tasks) == 5 and all("(train)" in task and task.endswith("completed") for task in tasks), tasks
    assert sorted(rounds(lost_node_run["root"] / "runs" / "lost")[5]["train"]["updates"]) == ["site-1", "site-3"]


def test_every_process_is_stopped(lost_node_run):
    assert lost_node_run["tree_before_close"]  # the SuperLink had started its ServerApp tree
    assert lost_node_run["left_over"] == []
