"""A simulation attached to an existing Ray cluster: `ray start --head` (+ a worker node) on loopback.

The run must complete, its ClientApps must run on the cluster's nodes (one per node, as each
node has one CPU), their logs must land in the cluster's own temp dir, and stopping the
cluster must leave none of its processes (without `ray stop`, which stops every Ray here).
"""

import subprocess
import sys
import threading

import pytest

from fedtumor.bench.ray_cluster import LoopbackRayCluster
from tests import REPO

# slow: `make test` already runs Ray simulations on the default local cluster; this one proves an external
# cluster (scripts/simulate.py --ray-address), which only multi-node users need. Run it with `pytest -m slow`.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_simulation_runs_on_an_existing_two_node_cluster(tmp_path, two_site_cohort):
    cohort = two_site_cohort
    run_config = (
        f"num-server-rounds=1 data-dir='{cohort}' output-dir='{tmp_path / 'runs'}' run-name='on-cluster' "
        "server-eval=false fraction-evaluate=0.0 patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4"
    )
    cluster = LoopbackRayCluster(nodes=2, cpus_per_node=1).start()
    busiest: list[int] = []
    done = threading.Event()

    def watch_placement():
        while not done.wait(0.3):
            now = cluster.actors_per_node()
            if sum(now) > sum(busiest):
                busiest[:] = now

    watcher = threading.Thread(target=watch_placement, daemon=True)
    try:
        assert len(cluster.raylet_ids()) == 2
        watcher.start()
        completed = subprocess.run(
            [sys.executable, "scripts/simulate.py", "--num-supernodes", "2", "--ray-address", cluster.address,
             "--run-config", run_config, "--flwr-home", str(tmp_path / "flwr-home")],
            cwd=REPO, capture_output=True, text=True, timeout=600,
            env={"FEDTUMOR_HOME": str(tmp_path / "home"), **_env_without_ray_address()},
        )  # fmt: skip
        done.set()
        watcher.join()
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        assert "status finished:completed" in completed.stdout
        assert busiest == [1, 1], f"ClientApp actors per node: {busiest}"
        worker_logs = "".join(
            path.read_text(errors="replace") for path in cluster.temp_dir.glob("session_*/logs/worker-*")
        )
        assert "site-1 round 1: loss" in worker_logs and "site-2 round 1: loss" in worker_logs
        assert (tmp_path / "runs" / "on-cluster" / "summary.json").is_file()
    finally:
        done.set()
        cluster.stop()
    assert cluster.process_ids() == []


def _env_without_ray_address():
    import os

    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
