#!/usr/bin/env python
"""Scale: simulated federations of 8 up to FeTS's 71 sites on one machine (or a Ray cluster).

One synthetic cohort of MAX(--sites) sites with tiny per-site data (3 or more subjects each,
a long tail); a federation of N sites uses the first N partitions of its CSV. For each N it
runs a real simulation of ROUNDS rounds (no evaluation: training, dispatch and aggregation
only, with a tiny model so the cost measured is the federation's) and reports:

- start-up (launch to round 1) and time per round (round 1 includes loading each site's
  data in the Ray workers; later rounds are steady state), and their growth from the
  smallest N;
- peak memory: PSS summed over the simulation's process tree (SuperLink, ServerApp, Ray,
  ClientApp workers) and, with a cluster, the cluster's processes;
- how sites are spread: Ray runs floor(CPUs / --cpus-per-site) ClientApps at once; the
  table shows the actor processes seen at once and, on a cluster, on each node.

With ``--cluster-nodes K`` the benchmark starts its own Ray cluster on loopback (a head and
K-1 worker nodes, --cpus-per-node each) and attaches the simulations to it, as a user who
outgrows one machine would attach to theirs with ``scripts/simulate.py --ray-address``.

    python scripts/bench_scale.py --out docs/bench --sites 8 24 71 --rounds 2
    python scripts/bench_scale.py --out docs/bench --sites 8 71 --cluster-nodes 2 --cpus-per-node 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import Progress

from data_loaders.partitions import partition_ids, read_partitions
from data_loaders.synthetic import generate_cohort
from fedtumor.bench.probe import round_progress, run_simulation
from fedtumor.bench.ray_cluster import LoopbackRayCluster
from fedtumor.bench.report import machine, markdown_table, print_table, write_record
from fedtumor.core.config import fedtumor_home, read_run_config
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.federation.settings import check_federation_keys

REPO = Path(__file__).resolve().parent.parent  # the Flower app the benchmark simulates
TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=4"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_scale.json/.md/.png, cohort, runs")
    parser.add_argument(
        "--work", type=Path, default=None, help="cohorts, runs and logs (default: $FEDTUMOR_HOME/bench)"
    )
    parser.add_argument("--sites", type=int, nargs="+", default=[8, 24, 71], help="federation sizes (default 8 24 71)")
    parser.add_argument("--subjects", type=int, default=240, help="training subjects over the largest cohort")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per simulation (default 2)")
    parser.add_argument("--cpus-per-site", type=int, default=1, help="CPUs Ray gives each ClientApp (default 1)")
    parser.add_argument("--run-config", default=TINY, help=f"model and patch settings (default: {TINY!r})")
    parser.add_argument("--cluster-nodes", type=int, default=0, help="start a loopback Ray cluster of K nodes")
    parser.add_argument("--cpus-per-node", type=int, default=1, help="CPUs of each cluster node (default 1)")
    args = parser.parse_args()
    if min(args.sites) < 2 or args.subjects < 3 * max(args.sites):
        parser.error("--sites must be >= 2 and --subjects at least 3 x the largest --sites")
    return args


def first_partitions(cohort: Path, n_sites: int, folder: Path) -> Path:
    """A partition CSV with the cohort's first ``n_sites`` sites (natural order)."""
    table = read_partitions(cohort / "partitioning.csv")
    keep = set(partition_ids(table)[:n_sites])
    raw = pd.read_csv(cohort / "partitioning.csv", dtype=str)
    path = folder / f"partitions-{n_sites}.csv"
    raw[raw["Partition_ID"].isin(keep)].to_csv(path, index=False)
    return path


def report(results: list[dict], title: str, out: Path, name: str, console: Console) -> None:
    """Growth against the smallest federation; the table (terminal and markdown) and the plot."""
    rows = []
    smallest = results[0]
    for r in results:
        r["round_growth"] = (r["steady_round_s"] or r["first_round_s"]) / (
            smallest["steady_round_s"] or smallest["first_round_s"]
        )
        r["memory_growth"] = r["peak_pss_mib"] / smallest["peak_pss_mib"]
        rows.append(
            [
                r["sites"],
                r["startup_s"],
                r["first_round_s"],
                r["steady_round_s"],
                r["round_growth"],
                r["peak_pss_mib"],
                r["memory_growth"],
                r["parallel_client_actors"],
                "-" if not r["actors_per_node"] else "+".join(map(str, r["actors_per_node"])),
            ]
        )
    headers = [
        "sites",
        "start-up s",
        "round 1 s",
        "later round s",
        "x round",
        "peak MiB",
        "x memory",
        "parallel ClientApps",
        "per node",
    ]
    print_table(console, title, headers, rows)
    (out / f"{name}.md").write_text(markdown_table(headers, rows))
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    time_ax, memory_ax = fig.subplots(1, 2)
    sites = [r["sites"] for r in results]
    time_ax.plot(sites, [r["first_round_s"] for r in results], "o-", label="round 1 (loads site data)")
    time_ax.plot(sites, [r["steady_round_s"] for r in results], "s-", label="later round")
    time_ax.plot(sites, [r["startup_s"] for r in results], "^--", label="start-up")
    time_ax.set_xlabel("sites")
    time_ax.set_ylabel("seconds")
    time_ax.legend(fontsize=8)
    memory_ax.plot(sites, [r["peak_pss_mib"] for r in results], "o-", color="#D55E00")
    memory_ax.set_xlabel("sites")
    memory_ax.set_ylabel("peak memory (PSS, MiB)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(out / f"{name}.png", dpi=130)


def main() -> int:
    args = parse_args()
    console = Console()
    before = machine()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or fedtumor_home() / "bench").expanduser().resolve()
    largest = max(args.sites)
    try:
        cohort = generate_cohort(
            work / f"scale-cohort-{largest}-{args.subjects}", largest, args.subjects, seed=0, n_test=2
        ).root
        csvs = {n: first_partitions(cohort, n, work) for n in args.sites}
        base = (
            f"data-dir='{cohort}' output-dir='{work / 'scale-runs'}' num-server-rounds={args.rounds} "
            f"server-eval=false fraction-evaluate=0.0 {args.run_config}"
        )
        check_federation_keys(read_run_config(base, REPO))
    except (ConfigError, DataError, ValueError) as exc:
        console.print(f"error: {exc}", style="bold red", highlight=False)
        return 2
    cluster = None
    if args.cluster_nodes:
        console.print(f"starting a Ray cluster: {args.cluster_nodes} nodes x {args.cpus_per_node} CPUs on loopback")
        cluster = LoopbackRayCluster(nodes=args.cluster_nodes, cpus_per_node=args.cpus_per_node).start()
    results = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        with Progress(console=console) as progress:
            for n in sorted(args.sites):
                placement: list[int] = []

                def note_placement(line: str, placement=placement) -> None:
                    if cluster is not None:  # the actors each node hosts, at the busiest moment seen
                        now = cluster.actors_per_node()
                        if sum(now) > sum(placement):
                            placement[:] = now

                task = progress.add_task(f"{n} sites: rounds", total=args.rounds)
                advance = round_progress(progress, task, args.rounds)
                run_config = f"{base} partitions='{csvs[n]}' min-available-nodes={n} run-name='scale-{n}-{stamp}'"
                timing = run_simulation(
                    n,
                    run_config,
                    flwr_home=work / "scale-flwr-home",
                    log_path=work / "scale-logs" / f"sites-{n}.log",
                    num_cpus=args.cpus_per_site,
                    ray_address=cluster.address if cluster else None,
                    extra_memory_roots=cluster.process_ids if cluster else None,
                    on_line=lambda line, advance=advance, note=note_placement: (advance(line), note(line)),
                    app_dir=REPO,
                )
                progress.remove_task(task)
                if not timing.ok:
                    console.print(f"error: {n} sites: simulation {timing.status}; log tail:\n{timing.log_tail}")
                    return 1
                per_round = timing.round_seconds()
                result = {
                    "sites": n,
                    "startup_s": timing.startup_s,
                    "round_s": per_round,
                    "first_round_s": per_round.get(1),
                    "steady_round_s": per_round.get(max(per_round)) if len(per_round) > 1 else None,
                    "wall_s": timing.wall_s,
                    "peak_pss_mib": timing.peak_pss_mib,
                    "peak_processes": timing.peak_processes,
                    "parallel_client_actors": timing.max_client_actors,
                    "actors_per_node": placement or None,
                }
                results.append(result)
                rounds_text = ", ".join(f"{s:.1f}s" for s in per_round.values())
                console.print(
                    f"{n} sites: start-up {timing.startup_s:.1f}s, rounds {rounds_text}, "
                    f"peak {timing.peak_pss_mib:,.0f} MiB",
                    highlight=False,
                )
    finally:
        if cluster is not None:
            cluster.stop()
    where = f"Ray cluster of {args.cluster_nodes} x {args.cpus_per_node} CPUs" if cluster else "local Ray"
    name = "bench_scale_cluster" if cluster else "bench_scale"  # a cluster run never overwrites a local one
    report(results, f"Scale: {args.cpus_per_site} CPU per site, {where}", out, name, console)
    settings = {**vars(args), "out": str(out), "run_config": base}
    write_record(out / f"{name}.json", "scale", settings, results, before)
    console.print(f"wrote {out / name}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
