"""Start Flower's long-running processes and stop them together with everything they spawned.

A SuperLink or SuperNode starts ``flower-superexec`` helpers in their own sessions, which
start the ServerApp and ClientApp processes; killing the parent alone leaves them running.
:class:`ManagedProcess` starts a command in a new session, logs it to a file, and stops the
whole tree: every descendant found through ``/proc`` (by parent pid, or by Flower's
``--parent-pid`` argument), then the process itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_GRACE_S = 10.0


def with_venv_tools(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with this venv's bin folder first on PATH, so ``flwr`` and Flower's daemons are this venv's."""
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free TCP ports on 127.0.0.1 (all held open while choosing, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def command_lines(*needles: str) -> dict[int, str]:
    """pid -> command line of every other process whose command line contains all ``needles``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmdline and all(needle in cmdline for needle in needles):
            found[int(entry.name)] = cmdline
    return found


def _proc_parents() -> dict[int, set[int]]:
    """pid -> the pids it counts as parents: its real parent and Flower's ``--parent-pid``."""
    parents: dict[int, set[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may contain spaces
        found = {ppid}
        for flag, value in zip(args, args[1:]):
            if flag == b"--parent-pid" and value.isdigit():
                found.add(int(value))
        parents[int(entry.name)] = found
    return parents


def descendants(pid: int) -> list[int]:
    """Every process started, directly or through Flower's detached helpers, by ``pid``."""
    parents = _proc_parents()
    found: list[int] = []
    frontier = {pid}
    while frontier:
        children = {child for child, owners in parents.items() if owners & frontier and child not in found}
        children.discard(pid)
        found.extend(sorted(children))
        frontier = children
    return found


def signal_all(pids: Sequence[int], signum: int) -> None:
    """Send ``signum`` to each of ``pids`` that still exists."""
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class ManagedProcess:
    """One long-running command, its output in ``log_path``, stoppable with all its children."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ):
        self.name = name
        self.command = list(command)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it in order
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout_s: float) -> bool:
        """True once ``text`` appears in the log; False if the process exits or time runs out first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log_text():
                return True
            if not self.running():
                return text in self.log_text()
            time.sleep(0.2)
        return False

    def kill(self) -> None:
        """SIGKILL the process and its descendants at once, as a power cut would: no clean-up runs."""
        signal_all([self.pid, *descendants(self.pid)], signal.SIGKILL)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process and its descendants, SIGKILL what is left after ``grace_s``."""
        tree = descendants(self.pid)
        if self.running():
            signal_all([self.pid, *tree], signal.SIGTERM)
        else:
            signal_all(tree, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(is_alive(pid) for pid in [self.pid, *tree]):
            self.popen.poll()  # reap our child so it does not linger as a zombie
            time.sleep(0.2)
        leftovers = [pid for pid in [self.pid, *tree, *descendants(self.pid)] if is_alive(pid)]
        signal_all(leftovers, signal.SIGKILL)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
