"""`scripts/simulate.py` killed by `timeout` (SIGTERM) or a closed terminal (SIGHUP) leaves nothing behind.

The run is stopped once its ServerApp is up (Ray, the SuperExec and the SuperLink all running).
Every process the run started inherits the runner's environment, so the test finds them by a
marker variable in ``/proc/<pid>/environ``: none may survive, and the temporary Flower home the
runner made must be gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fedtumor.deployment.processes import signal_all
from tests import REPO
from tests.e2e.simulation import TINY_MODEL, simulate_command

pytestmark = pytest.mark.e2e

MARKER = "FEDTUMOR_SIGNAL_TEST"
SERVERAPP_STARTED = "fedtumor: 2 nodes"  # the ServerApp's first line, once Ray and both sites are up


def processes_with_marker(value: str) -> list[int]:
    needle = f"{MARKER}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize(
    "signum",
    # SIGHUP takes the same path (see the test below); its full run is in the slow set to save a minute.
    [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow)],
    ids=["SIGTERM", "SIGHUP"],
)
def test_a_signalled_simulation_stops_every_process_it_started(tmp_path, two_site_cohort, signum):
    marker = uuid.uuid4().hex
    temp = tmp_path / "tmp"  # the runner's temporary Flower home is made here
    temp.mkdir()
    run_config = (
        f"num-server-rounds=50 data-dir='{two_site_cohort}' output-dir='{tmp_path / 'runs'}' run-name='signalled' "
        f"fraction-evaluate=0.0 server-eval=false {TINY_MODEL}"
    )
    env = {**os.environ, MARKER: marker, "TMPDIR": str(temp), "FEDTUMOR_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        simulate_command(2, run_config), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if SERVERAPP_STARTED in line:
                break
        assert any(SERVERAPP_STARTED in line for line in seen), "".join(seen[-50:])
        started = processes_with_marker(marker)
        assert len(started) >= 4, started  # at least flwr run, the SuperLink, its ServerApp and Ray
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed test still stops what the run started, found by its marker
            signal_all([proc.pid, *processes_with_marker(marker)], signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130, "".join(seen[-20:]) + rest[-3000:]
    deadline = time.monotonic() + 30  # SIGKILLed stragglers take a moment to be reaped
    while time.monotonic() < deadline and processes_with_marker(marker):
        time.sleep(0.5)
    assert processes_with_marker(marker) == []
    assert list(temp.glob("fedtumor-flwr-home-*")) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_termination_signals_raise_keyboard_interrupt_so_clean_up_runs(signum):
    script = (
        "import os, signal\n"
        "from fedtumor.deployment.simulation import interrupt_on_termination_signals\n"
        "interrupt_on_termination_signals()\n"
        "try:\n"
        f"    os.kill(os.getpid(), {int(signum)})\n"
        "    signal.pause()\n"
        "except KeyboardInterrupt:\n"
        "    print('cleaned up')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "cleaned up", done.stderr
