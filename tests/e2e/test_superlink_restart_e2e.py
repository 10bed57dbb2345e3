"""The coordinating centre's SuperLink killed mid-run and restarted on its state database.

Two registered sites (TLS, node authentication, 127.0.0.1) and a SuperLink that keeps its state
in a SQLite file. A reference FedAdam run of 3 rounds completes first. The same run again is
stopped by SIGKILLing the SuperLink, with its SuperExec and ServerApp, once round 2's resume
state is saved. The SuperLink is started again on the same port and database; the SuperNodes,
which were never stopped, reconnect by themselves with the same keys; the run the crash left
``running`` is stopped; and ``resume`` continues it. Its final weights must equal the
reference's, bit for bit, its audit log must read run-start, resume, run-end and verify, and no
process may be left behind.
"""

import json
import time

import pytest
import torch

from fedtumor.deployment.flwr_runs import SUCCESS_STATUS, run_status, stop_run, stream_run, submit_run, wait_for_run
from fedtumor.deployment.loopback import CONNECTION, LoopbackFederation
from fedtumor.deployment.processes import command_lines
from fedtumor.run.audit import verify_run
from fedtumor.run.files import AUDIT_FILE, RESUME_FILE
from tests import REPO
from tests.e2e.loopback_sites import loopback_sites

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # about 4 minutes; the SuperNode-loss test runs in CI
TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4"
SITES = ("site-1", "site-2")


def saved_round(run_dir) -> int | None:
    try:
        return int(torch.load(run_dir / RESUME_FILE, map_location="cpu", weights_only=True)["round"])
    except Exception:  # not written yet, or being replaced
        return None


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "final_model.pt", map_location="cpu", weights_only=True)["state_dict"]


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def restarted(tmp_path_factory, two_site_cohort):
    root = tmp_path_factory.mktemp("superlink-restart")
    setup = loopback_sites(two_site_cohort, root, SITES)
    sites, coordinator, certs, keys = setup.sites, setup.coordinator, setup.certs, setup.keys
    federation = LoopbackFederation(
        root / "work", certs, node_auth=True, proxy=False, database=root / "state.db", node_max_retries=None
    )
    federation.env["FEDTUMOR_HOME"] = str(root / "home")
    common = (
        f"num-server-rounds=3 strategy='fedadam' seed=7 min-available-nodes=2 fraction-evaluate=0.0 "
        f"data-dir='{coordinator}' output-dir='{root / 'runs'}' {TINY}"
    )
    lines: list[str] = []
    results = {"root": root, "lines": lines}
    try:
        federation.start_superlink()
        for name in SITES:
            federation.register_node(keys[name].public_key)
            federation.start_supernode(name, sites[name], keys[name].private_key)
        reference = stream_run(
            CONNECTION, federation.env, f"{common} run-name='reference'", app_dir=REPO, echo=lines.append
        )
        results["reference"] = wait_for_run(reference, CONNECTION, federation.env, timeout_s=600)

        run_dir = root / "runs" / "interrupted"
        interrupted = submit_run(CONNECTION, federation.env, f"{common} run-name='interrupted'", app_dir=REPO)
        results["saved_before_kill"] = wait_until(lambda: saved_round(run_dir) == 2, 600)
        federation.superlink.kill()  # SuperLink, SuperExec and ServerApp: no clean-up runs
        results["summary_after_kill"] = (run_dir / "summary.json").exists()

        federation.restart_superlink()
        results["reconnected"] = wait_until(
            lambda: sorted(federation.node_statuses().values()) == ["online", "online"], 120
        )
        stop_run(interrupted, CONNECTION, federation.env)  # left "running" in the database by the crash
        results["old_run_status"] = run_status(interrupted, CONNECTION, federation.env)
        resumed = stream_run(
            CONNECTION, federation.env, f"{common} resume='{run_dir}'", app_dir=REPO, echo=lines.append
        )
        results["resumed"] = wait_for_run(resumed, CONNECTION, federation.env, timeout_s=600)
    finally:
        federation.close()
    results["left_over"] = list(command_lines(str(root)).values())
    return results


def test_the_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(restarted):
    tail = "\n".join(restarted["lines"][-60:])
    assert restarted["reference"] == SUCCESS_STATUS, tail
    assert restarted["saved_before_kill"] and not restarted["summary_after_kill"]
    assert restarted["reconnected"], "the SuperNodes did not come back online after the restart"
    assert restarted["old_run_status"].startswith("finished"), restarted["old_run_status"]
    assert restarted["resumed"] == SUCCESS_STATUS, tail
    runs = restarted["root"] / "runs"
    expected, got = final_weights(runs / "reference"), final_weights(runs / "interrupted")
    assert list(got) == list(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), (name, (got[name] - expected[name]).abs().max())


def test_the_audit_log_records_the_resume_and_verifies(restarted):
    run_dir = restarted["root"] / "runs" / "interrupted"
    entries = [json.loads(line) for line in (run_dir / AUDIT_FILE).read_text().splitlines()]
    assert [e["event"] for e in entries if e["event"] != "round"] == ["run-start", "resume", "run-end"]
    assert next(e for e in entries if e["event"] == "resume")["from_round"] == 2
    assert [e["round"] for e in entries if e["event"] == "round"][-1] == 3
    assert verify_run(run_dir, ("final_model.pt",)).intact


def test_every_process_is_stopped(restarted):
    assert restarted["left_over"] == []
