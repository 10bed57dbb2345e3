"""A Ray cluster on loopback for tests and benchmarks: `ray start --head` (+ worker nodes), then stop it.

A simulation attaches to it through ``scripts/simulate.py --ray-address`` (Flower's Ray
backend calls ``ray.init()`` without an address, which reads ``RAY_ADDRESS``). Every port
is chosen free and every process is found by this cluster's own temp dir, so stopping it
never touches another Ray instance on the machine (``ray stop`` would stop them all).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedtumor.bench.probe import command_line, pids_whose_command_contains, process_tree
from fedtumor.deployment.processes import free_ports

RAY = str(Path(sys.executable).with_name("ray"))
OBJECT_STORE_BYTES = 1_000_000_000


NODE_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


def _node_ports(ports: list[int]) -> list[str]:
    # Explicit, distinct free ports: Ray's defaults (10001, 52365, ...) may be taken by another Ray on the machine.
    return [f"{flag}={port}" for flag, port in zip(NODE_PORT_FLAGS, ports, strict=True)]


@dataclass
class LoopbackRayCluster:
    """``nodes`` Ray nodes on 127.0.0.1 with ``cpus_per_node`` CPUs each (the first is the head)."""

    nodes: int = 1
    cpus_per_node: int = 2
    gpus_per_node: float = 0.0
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp")))
    address: str = ""

    def start(self) -> LoopbackRayCluster:
        # Every port of every node at once, so no two components are handed the same one.
        port, client_port, *node_ports = free_ports(2 + len(NODE_PORT_FLAGS) * self.nodes)
        per_node = [node_ports[i : i + len(NODE_PORT_FLAGS)] for i in range(0, len(node_ports), len(NODE_PORT_FLAGS))]
        self.address = f"127.0.0.1:{port}"
        common = [f"--num-cpus={self.cpus_per_node}", f"--num-gpus={self.gpus_per_node:g}", "--disable-usage-stats"]
        common.append(f"--object-store-memory={OBJECT_STORE_BYTES}")  # a shared machine: not 30% of RAM
        head = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--temp-dir={self.temp_dir}"]
        head += [
            "--include-dashboard=false",
            f"--ray-client-server-port={client_port}",
            *_node_ports(per_node[0]),
            *common,
        ]
        self._run(head)
        for ports in per_node[1:]:
            worker = [
                RAY,
                "start",
                f"--address={self.address}",
                "--node-ip-address=127.0.0.1",
                *_node_ports(ports),
                *common,
            ]
            self._run(worker)
        return self

    def _run(self, command: list[str]) -> None:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"`{' '.join(command[:3])}` failed: {(done.stderr or done.stdout).strip()[-800:]}")

    def process_ids(self) -> list[int]:
        """Every process of this cluster: those naming its temp dir and their descendants."""
        return sorted(process_tree(pids_whose_command_contains(str(self.temp_dir))))

    def raylet_ids(self) -> list[int]:
        """One raylet per node; a node's workers (ClientApp actors) are its raylet's descendants."""
        # By executable name: a node's agents and workers also carry ``--raylet-name=.../raylet`` in their arguments.
        return [
            pid
            for pid in pids_whose_command_contains(str(self.temp_dir))
            if Path(command_line(pid).split(" ", 1)[0]).name == "raylet"
        ]

    def actors_per_node(self) -> list[int]:
        """ClientApp actor processes alive on each node now, in raylet order."""
        counts = []
        for raylet in self.raylet_ids():
            counts.append(sum("ClientAppActor" in command_line(pid) for pid in process_tree([raylet])))
        return counts

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, this cluster's processes only; remove its temp dir."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.process_ids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LoopbackRayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
