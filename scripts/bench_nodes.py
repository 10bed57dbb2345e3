#!/usr/bin/env python
"""Many SuperNodes: a live loopback federation of N sites, for several N, on this one machine.

For each `--sites` value, runs `scripts/local_federation.sh` (a SuperLink and one SuperNode
per site as separate processes on 127.0.0.1, TLS and node authentication, through the
centre's proxy unless `--no-proxy`) for `--rounds` rounds of a tiny model on tiny data, while
sampling the summed PSS of every process the script started. The table reports, per N:

- `round s`: each round's wall time as the ServerApp timed it (`round_wall_s` in the run's
  metrics.csv: sampling, messages, the sites' work, aggregation);
- `peak MiB` and `MiB per site`: the whole federation's peak memory (PSS, so shared pages
  count once), over the sites;
- `wall s`: the whole command, certificates to the last process stopped;
- `left`: processes still running from the run's working folder afterwards (must be 0).

    python scripts/bench_nodes.py --sites 4 20 --rounds 2 --out docs/bench
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from fedtumor.bench.probe import MemorySampler, serverapp_round_seconds
from fedtumor.bench.report import machine, markdown_table, print_table, write_record
from fedtumor.deployment.processes import command_lines
from fedtumor.run.writer import read_summary

REPO = Path(__file__).resolve().parent.parent
TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=2 fraction-evaluate=0.0"
HEADERS = ["sites", "round 1 s", "round 2 s", "peak MiB", "MiB per site", "wall s", "status", "left"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[4, 20], help="federation sizes (default 4 20)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per federation (default 2)")
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_nodes.json and .md")
    parser.add_argument("--no-proxy", action="store_true", help="SuperNodes connect to the SuperLink directly")
    args = parser.parse_args(argv)
    if min(args.sites) < 2 or args.rounds < 1:
        parser.error("--sites must be at least 2 and --rounds at least 1")
    return args


def run_federation(sites: int, rounds: int, root: Path, no_proxy: bool) -> dict:
    """One loopback federation of ``sites`` SuperNodes; its timing, memory and what it left behind."""
    workdir, out = root / f"work-{sites}", root / "runs"
    command = [
        "bash", str(REPO / "scripts" / "local_federation.sh"), "--sites", str(sites), "--rounds", str(rounds),
        "--subjects", str(3 * sites), "--out", str(out), "--run-name", f"nodes-{sites}", "--workdir", str(workdir),
        "--run-config", TINY, *(["--no-proxy"] if no_proxy else []),
    ]  # fmt: skip
    env = {**os.environ, "FEDTUMOR_HOME": str(root / "home")}
    started = time.perf_counter()
    with (root / f"nodes-{sites}.log").open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = MemorySampler(lambda: [process.pid], interval_s=1.0)
        sampler.start()
        returncode = process.wait()
        sampler.stop()
    wall_s = time.perf_counter() - started
    run_dir = out / f"nodes-{sites}"
    summary = read_summary(run_dir) or {}
    peak_mib = sampler.peak_bytes / 2**20
    return {
        "sites": sites,
        "returncode": returncode,
        "status": summary.get("status", "no summary"),
        "round_s": serverapp_round_seconds(run_dir) if (run_dir / "metrics.csv").is_file() else {},
        "peak_pss_mib": peak_mib,
        "peak_mib_per_site": peak_mib / sites,
        "peak_processes": sampler.peak_processes,
        "wall_s": wall_s,
        "left_over": list(command_lines(str(workdir)).values()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    before = machine()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    results, rows = [], []
    with tempfile.TemporaryDirectory(prefix="fedtumor-nodes-") as temporary:
        for sites in args.sites:
            console.print(f"{sites} SuperNodes, {args.rounds} rounds ...")
            result = run_federation(sites, args.rounds, Path(temporary), args.no_proxy)
            results.append(result)
            per_round = [result["round_s"].get(r) for r in (1, 2)]
            rows.append(
                [sites, *per_round, result["peak_pss_mib"], result["peak_mib_per_site"], result["wall_s"],
                 result["status"], len(result["left_over"])]
            )  # fmt: skip
            write_record(out / "bench_nodes.json", "nodes", vars(args) | {"out": str(out)}, results, before)
    print_table(console, "Loopback federations (TLS, node authentication)", HEADERS, rows)
    (out / "bench_nodes.md").write_text(markdown_table(HEADERS, rows))
    ok = all(r["status"] == "completed" and not r["left_over"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
