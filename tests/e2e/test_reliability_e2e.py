"""Real federations (scripts/simulate.py, Ray-simulated sites) that fail on purpose.

- faults: in one 3-round run, site-1 raises in round 1; in round 2 site-2 stalls past the
  round timeout and site-3 sends NaN; in round 3 site-1's process dies and site-2 sends an
  update 1000 times too long for ``max-update-norm``. Every round still aggregates what it
  got, the audit log names each failed or rejected site with its reason, and verifies.
- too few replies: a round with fewer usable updates than ``min-train-replies`` ends the
  run with one error naming the sites and why; the audit log and a failed summary record it.
- resume: a 3-round FedAdam run killed (SIGKILL, server and sites) after its round-2 state
  is saved, then resumed, ends with exactly the weights of an uninterrupted 3-round run.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.run.files import AUDIT_FILE, RESUME_FILE
from tests import REPO
from tests.conftest import copy_cohort
from tests.e2e.simulation import TINY_MODEL, output_of, simulate, simulate_command

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, three_site_cohort):
    root = tmp_path_factory.mktemp("reliability")
    copy_cohort(three_site_cohort, root / "cohort")
    return root


def _in(root: Path, run_config: str) -> str:
    return f"data-dir='{root / 'cohort'}' output-dir='{root / 'runs'}' {TINY_MODEL} {run_config}"


def run_command(root: Path, flwr_home: str, run_config: str) -> list[str]:
    return simulate_command(3, _in(root, run_config), root / flwr_home)


def simulate_in(root: Path, flwr_home: str, run_config: str) -> subprocess.CompletedProcess:
    return simulate(3, _in(root, run_config), root / "home", root / flwr_home)


def audit_entries(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / AUDIT_FILE).read_text().splitlines()]


def verify(run_dir: Path):
    return CliRunner().invoke(app, ["audit", "verify", str(run_dir)])


# ----------------------------------------------------------------------------- faults


FAULTS = "site-1:raise@1 site-2:timeout@2 site-3:nan@2 site-1:crash@3 site-2:scale@3"


@pytest.fixture(scope="module")
def faulty_run(cohort):
    completed = simulate_in(
        cohort,
        "flwr-faults",
        # warm-up: the Ray workers import the ClientApp before round 1, so the 30 s timeout times rounds, not
        # imports (a loaded CI machine once spent all 30 s of round 1 importing)
        f"num-server-rounds=3 run-name='faults' round-timeout-s=30 min-train-replies=1 max-update-norm=100.0 "
        "warm-up=true "
        f"fault-injection='{FAULTS}'",
    )
    return completed, cohort / "runs" / "faults"


def test_a_run_with_failing_sites_completes(faulty_run):
    completed, run_dir = faulty_run
    assert completed.returncode == 0, output_of(completed)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 3 and (run_dir / "final_model.pt").is_file()


def test_the_audit_log_names_every_failed_and_rejected_site_with_its_reason(faulty_run):
    _, run_dir = faulty_run
    rounds = {
        entry["round"]: entry["train"]
        for entry in audit_entries(run_dir)
        if entry["event"] == "round" and entry["round"]
    }
    assert sorted(rounds) == [1, 2, 3]
    for train in rounds.values():
        assert train["asked"] == ["site-1", "site-2", "site-3"]
    assert rounds[1]["failed"] == {"site-1": "injected fault: site-1 raises in round 1"}
    assert sorted(rounds[1]["updates"]) == ["site-2", "site-3"]
    assert rounds[2]["failed"] == {"site-2": "no reply before the round timeout (round-timeout-s)"}
    assert list(rounds[2]["rejected"]) == ["site-3"] and "has NaN or Inf values" in rounds[2]["rejected"]["site-3"]
    assert sorted(rounds[2]["updates"]) == ["site-1"]
    assert "ActorDiedError" in rounds[3]["failed"]["site-1"]  # the process died: Ray reports it
    assert rounds[3]["rejected"]["site-2"].startswith("update norm ")
    assert rounds[3]["rejected"]["site-2"].endswith("exceeds max-update-norm 100")
    assert sorted(rounds[3]["updates"]) == ["site-3"]
    for train in rounds.values():
        for update in train["updates"].values():
            assert update["num_examples"] >= 1 and 0 < update["update_norm"] < 100
            assert len(update["data_manifest_sha256"]) == 64
    assert verify(run_dir).exit_code == 0


def test_summary_and_manifests_record_the_failures_and_the_data(faulty_run):
    _, run_dir = faulty_run
    summary = json.loads((run_dir / "summary.json").read_text())
    failed = {(f["round"], f["site"]) for f in summary["failed_replies"] if f["phase"] == "train"}
    assert {(1, "site-1"), (2, "site-2"), (2, "site-3"), (3, "site-1"), (3, "site-2")} <= failed
    manifests = json.loads((run_dir / "data_manifests.json").read_text())
    assert sorted(manifests) == ["site-1", "site-2", "site-3"]
    assert summary["data_manifests"] == {site: m["sha256"] for site, m in manifests.items()}


@pytest.mark.slow  # CI time: the failing-sites run is the fault test CI runs in simulation
def test_too_few_usable_updates_end_the_run_with_a_clear_error(cohort):
    completed = simulate_in(
        cohort,
        "flwr-too-few",
        "num-server-rounds=2 run-name='too-few' min-train-replies=2 fault-injection='site-1:raise@1 site-2:nan@1'",
    )
    run_dir = cohort / "runs" / "too-few"
    assert completed.returncode == 1, completed.stdout[-3000:]
    assert "round 1: 1 of 3 sites returned a usable update, min-train-replies needs 2" in completed.stdout
    last = audit_entries(run_dir)[-1]
    assert last["event"] == "run-failed" and last["last_completed_round"] == 0
    # site-1 never replied before, so only its node id and its own message name it; site-2's reply said who it is
    assert "injected fault: site-1 raises in round 1" in last["reason"]
    assert "site-2: rejected: array" in last["reason"]
    # The failed run's summary says why and where it stopped, and what the rounds before gave.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["last_completed_round"] == 0
    assert summary["error"] == last["reason"] and summary["error"].startswith("RoundFailedError: round 1: 1 of 3")
    assert summary["audit_head_sha256"] == last["sha256"]
    # site-1's exception is Flower's error, not a site's data error: it has no site id to read
    failed_sites = sorted(f["site"] for f in summary["failed_replies"])
    assert len(failed_sites) == 2 and failed_sites[0].startswith("node-") and failed_sites[1] == "site-2"
    assert set(summary["sites"]) == {"site-3"} and summary["final"]["round"] == 0
    assert verify(run_dir).exit_code == 0


# ----------------------------------------------------------------------------- resume


def _saved_round(run_dir: Path) -> int | None:
    try:
        return int(torch.load(run_dir / RESUME_FILE, map_location="cpu", weights_only=True)["round"])
    except Exception:  # not written yet (or being replaced)
        return None


def _kill_everything_using(flwr_home: Path) -> None:
    """SIGKILL every process group that runs with this FLWR_HOME: SuperLink, ServerApp, Ray, sites."""
    needle = f"FLWR_HOME={flwr_home}".encode()
    groups = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    groups.add(os.getpgid(int(proc.name)))
            except (OSError, ProcessLookupError):
                continue
    for group in groups - {os.getpgid(0)}:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


RESUME_RUN = "num-server-rounds=3 strategy='fedadam' seed=7"


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "final_model.pt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow  # three simulations, about 4 minutes of CI's 15; run with `pytest -m slow`
def test_a_run_killed_after_round_2_and_resumed_ends_like_an_uninterrupted_run(cohort):
    reference = simulate_in(cohort, "flwr-reference", f"{RESUME_RUN} run-name='reference'")
    assert reference.returncode == 0, reference.stdout[-3000:]

    run_dir, flwr_home = cohort / "runs" / "interrupted", cohort / "flwr-interrupted"
    env = {**os.environ, "FEDTUMOR_HOME": str(cohort / "home")}
    command = run_command(cohort, "flwr-interrupted", f"{RESUME_RUN} run-name='interrupted'")
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    ) as first:
        deadline = time.monotonic() + 600
        while _saved_round(run_dir) != 2 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert _saved_round(run_dir) == 2, "the run never saved its round-2 state"
        os.killpg(first.pid, signal.SIGKILL)  # the wrapper...
        _kill_everything_using(flwr_home)  # ...and the server and sites it started: no clean-up runs
    assert not (run_dir / "summary.json").exists() and not (run_dir / "final_model.pt").exists()

    resumed = simulate_in(cohort, "flwr-resumed", f"{RESUME_RUN} resume='{run_dir}'")
    assert resumed.returncode == 0, resumed.stdout[-3000:]

    expected, got = final_weights(cohort / "runs" / "reference"), final_weights(run_dir)
    assert list(got) == list(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), (name, (got[name] - expected[name]).abs().max())

    entries = audit_entries(run_dir)
    assert [e["event"] for e in entries if e["event"] != "round"] == ["run-start", "resume", "run-end"]
    assert [e["round"] for e in entries if e["event"] == "round"][-1:] == [3]
    assert next(e for e in entries if e["event"] == "resume")["from_round"] == 2
    assert verify(run_dir).exit_code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from_round"] == 2 and summary["final"]["round"] == 3
    test_rounds = sorted(
        int(line.split(",")[0])
        for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]
        if ",global,test,dice_wt," in line
    )
    assert test_rounds == [0, 1, 2, 3]  # nothing lost, nothing twice
