"""Run a simulation (what `scripts/simulate.py` runs) and observe it: when each round starts and ends, and peak memory.

Round boundaries come from Flower's own log lines (``[ROUND k/R]`` and ``Strategy execution
finished``), time-stamped as they arrive on the stream, so a round's wall time is exact to
the stream's delivery delay (well under a second), the same for every round. Memory is the
proportional set size (PSS: shared pages split between the processes sharing them) summed
over the simulation's process tree, plus any extra process trees given (an attached Ray
cluster), sampled every ``interval_s``.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fedtumor.deployment.simulation import STATUS_PREFIX, simulation_command
from fedtumor.run.writer import read_metrics

ROUND_START = re.compile(r"\[ROUND (\d+)/(\d+)\]")
STRATEGY_DONE = re.compile(r"Strategy execution finished in ([\d.]+)s")
STATUS_LINE = re.compile(re.escape(STATUS_PREFIX) + r" \d+ status (\S+)")


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(proc.name))
    return children


def process_tree(roots: Iterable[int]) -> set[int]:
    """The roots and all their descendants still alive."""
    children = _children_by_parent()
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
    return seen


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (0 when it is gone or unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_whose_command_contains(needle: str) -> list[int]:
    """Processes (e.g. a Ray cluster's, by its temp dir) whose command line contains ``needle``."""
    own = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != own and needle in command_line(int(p.name))
    ]


class MemorySampler(threading.Thread):
    """Samples the summed PSS of some process trees until stopped; keeps the peak."""

    def __init__(self, roots: Callable[[], list[int]], interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.roots = roots
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_processes = 0
        self.max_client_actors = 0  # Ray ClientAppActor processes seen at once: sites trained in parallel
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            pids = process_tree(self.roots())
            total = sum(pss_bytes(pid) for pid in pids)
            actors = sum("ClientAppActor" in command_line(pid) for pid in pids)
            self.peak_bytes = max(self.peak_bytes, total)
            self.peak_processes = max(self.peak_processes, len(pids))
            self.max_client_actors = max(self.max_client_actors, actors)
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


@dataclass
class SimulationTiming:
    returncode: int
    status: str
    wall_s: float  # launch to exit
    round_starts: dict[int, float] = field(default_factory=dict)  # seconds after launch
    strategy_done_s: float | None = None
    peak_pss_mib: float = 0.0
    peak_processes: int = 0
    max_client_actors: int = 0
    log_tail: str = ""

    @property
    def startup_s(self) -> float | None:
        """Launch until round 1 starts: SuperLink, ServerApp, Ray, the initial model and evaluation."""
        return self.round_starts.get(1)

    def round_seconds(self) -> dict[int, float]:
        """Wall time of every round: start to the next round's start (the last: to the strategy's end)."""
        rounds = sorted(self.round_starts)
        ends = [self.round_starts[r] for r in rounds[1:]] + [self.strategy_done_s]
        return {r: end - self.round_starts[r] for r, end in zip(rounds, ends) if end is not None}

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.status == "finished:completed"


def run_simulation(
    num_supernodes: int,
    run_config: str,
    flwr_home: Path,
    log_path: Path,
    num_cpus: int = 1,
    num_gpus: float = 0.0,
    ray_address: str | None = None,
    extra_memory_roots: Callable[[], list[int]] | None = None,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    *,
    app_dir: Path,
    check_config: bool = True,
) -> SimulationTiming:
    """Simulate the Flower app in ``app_dir`` in a new process, timing rounds and sampling memory."""
    command = [
        *simulation_command(app_dir),
        "--num-supernodes",
        str(num_supernodes),
        "--num-cpus",
        str(num_cpus),
        "--num-gpus",
        str(num_gpus),
        "--run-config",
        run_config,
        "--flwr-home",
        str(flwr_home),
    ]
    if ray_address:
        command += ["--ray-address", ray_address]
    if not check_config:  # not fedtumor's app (the benchmarks' bare Flower app)
        command.append("--no-config-check")
    timing = SimulationTiming(returncode=-1, status="unknown", wall_s=0.0)
    tail: list[str] = []
    started = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        log_path.open("w", buffering=1) as log,
        subprocess.Popen(
            command, cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
    ):
        sampler = MemorySampler(lambda: [proc.pid, *(extra_memory_roots() if extra_memory_roots else [])])
        sampler.start()
        try:
            for line in proc.stdout:
                now = time.perf_counter() - started
                log.write(line)
                tail = (tail + [line])[-40:]
                if match := ROUND_START.search(line):
                    timing.round_starts.setdefault(int(match.group(1)), now)
                elif STRATEGY_DONE.search(line):
                    timing.strategy_done_s = now
                elif match := STATUS_LINE.search(line):
                    timing.status = match.group(1)
                if on_line is not None:
                    on_line(line)
        finally:
            sampler.stop()
    timing.returncode = proc.returncode
    timing.wall_s = time.perf_counter() - started
    timing.peak_pss_mib = sampler.peak_bytes / 2**20
    timing.peak_processes = sampler.peak_processes
    timing.max_client_actors = sampler.max_client_actors
    timing.log_tail = "".join(tail)
    return timing


def round_progress(progress, task, rounds: int) -> Callable[[str], None]:
    """An ``on_line`` callback that moves a rich progress task as the simulation's rounds finish."""

    def on_line(line: str) -> None:
        if match := ROUND_START.search(line):
            progress.update(task, completed=int(match.group(1)) - 1)
        elif STRATEGY_DONE.search(line):
            progress.update(task, completed=rounds)

    return on_line


def serverapp_round_seconds(run_dir: Path) -> dict[int, float]:
    """Each round's wall time as the ServerApp timed it (``round_wall_s``: one round's close to the next).

    Not from ``flwr run --stream`` lines: Flower sends those every 0.5 s (``LOG_STREAM_INTERVAL``),
    which quantised the rounds (2.50, 2.51, 1.50 s) and made the best-round ratio swing.
    """
    metrics = read_metrics(run_dir)
    rows = metrics[(metrics["scope"] == "global") & (metrics["metric"] == "round_wall_s")]
    return {int(r): float(v) for r, v in zip(rows["round"], rows["value"], strict=True)}
