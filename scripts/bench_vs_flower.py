#!/usr/bin/env python
"""fedtumor's simulation against a bare Flower app with the same network and training, in one run.

Runs, one after the other on the same machine, two real Ray simulations of SITES sites and
ROUNDS rounds with no evaluation:

1. the bare Flower app (``scripts/bare_flower_app``): Flower's FedAvg, the demo's MONAI U-Net,
   each site taking as many Adam steps of batch 2 on random patches as a fedtumor site takes on
   its own subjects;
2. fedtumor's app on a synthetic cohort: the same network, patches and batch.

Both time their rounds inside the ServerApp. Reports, per app, the start-up (launch to round
1), the first and the steady round, and what a round adds to its sites' own training; then
the three targets (fedtumor/bench/flower_baseline.py): per-round overhead at most the bare
app's + 0.1 s, start-up at most 1.5x the bare app's, first round at most 1.5x a steady one.

    python scripts/bench_vs_flower.py --out docs/bench --sites 4 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import Progress

from data_loaders.synthetic import generate_cohort
from fedtumor.baselines.sites import load_sites
from fedtumor.bench.flower_baseline import comparison, run_bare, run_fedtumor
from fedtumor.bench.probe import round_progress
from fedtumor.bench.report import machine, markdown_table, print_table, write_record
from fedtumor.core.config import fedtumor_home, read_run_config
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.federation.settings import check_federation_keys

REPO = Path(__file__).resolve().parent.parent  # fedtumor's Flower app
BARE_APP = Path(__file__).resolve().parent / "bare_flower_app"
BATCH = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_vs_flower.json/.md/.png")
    parser.add_argument("--work", type=Path, default=None, help="cohort, runs, logs (default: $FEDTUMOR_HOME/bench)")
    parser.add_argument("--sites", type=int, default=4, help="simulated sites (default 4)")
    parser.add_argument("--subjects", type=int, default=16, help="synthetic subjects over all sites (default 16)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, at least 3 (default 5)")
    parser.add_argument("--samples-per-volume", type=int, default=8, help="patches per subject per round")
    parser.add_argument("--patch-size", type=int, default=32, help="patch edge (default 32)")
    parser.add_argument("--base-filters", type=int, default=8, help="the U-Net's first-level filters (default 8)")
    parser.add_argument("--cpus-per-site", type=int, default=os.cpu_count() or 1, help="Ray CPUs per ClientApp")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3: round 1 is not steady, and a median needs rounds")
    return args


def plot(result: dict, path: Path, title: str) -> None:
    names = ["startup_s", "first_round_s", "steady_round_s", "overhead_s_per_round"]
    labels = ["start-up", "first round", "steady round", "overhead / round"]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    width = 0.38
    for offset, (app, values) in zip((-width / 2, width / 2), result["apps"].items(), strict=True):
        ax.bar([i + offset for i in range(len(names))], [values[n] for n in names], width, label=app)
    ax.set_xticks(range(len(names)), labels)
    ax.set_ylabel("seconds")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.savefig(path, dpi=130)


def main() -> int:
    args = parse_args()
    console = Console()
    before = machine()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or fedtumor_home() / "bench").expanduser().resolve() / "vs-flower"
    run_name = f"vs-flower-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        cohort = generate_cohort(work / f"cohort-{args.sites}-{args.subjects}", args.sites, args.subjects, 0, n_test=1)
        fedtumor_config = (
            f"data-dir='{cohort.root}' output-dir='{work / 'runs'}' run-name='{run_name}' "
            f"num-server-rounds={args.rounds} server-eval=false fraction-evaluate=0.0 "
            f"min-available-nodes={args.sites} local-epochs=1 batch-size={BATCH} patch-size={args.patch_size} "
            f"samples-per-volume={args.samples_per_volume} base-filters={args.base_filters} torch-threads=1"
        )
        config = check_federation_keys(read_run_config(fedtumor_config, REPO))
        sites = load_sites(config, args.sites)
    except (ConfigError, DataError, ValueError) as exc:
        console.print(f"error: {exc}", style="bold red", highlight=False)
        return 2
    # The bare sites take as many steps as fedtumor's do on average (their subjects differ in number).
    steps = round(sum(len(site.train) for site in sites) * args.samples_per_volume / BATCH / len(sites))
    del sites
    bare_config = (
        f"num-server-rounds={args.rounds} steps={steps} batch-size={BATCH} patch-size={args.patch_size} "
        f"base-filters={args.base_filters} torch-threads=1"
    )
    with Progress(console=console) as progress:
        task = progress.add_task("bare Flower app: rounds", total=args.rounds)
        bare = run_bare(
            BARE_APP, work, args.sites, bare_config, args.cpus_per_site, round_progress(progress, task, args.rounds)
        )
        task = progress.add_task("fedtumor: rounds", total=args.rounds)
        fedtumor = run_fedtumor(
            REPO, work, args.sites, fedtumor_config, work / "runs" / run_name, args.cpus_per_site,
            round_progress(progress, task, args.rounds),
        )  # fmt: skip
    for run in (bare, fedtumor):
        if not run.ok or not run.steady_rounds():
            console.print(f"error: the {run.app} simulation failed ({run.status}); log tail:\n{run.log_tail}")
            return 1
    result = comparison(bare, fedtumor)
    settings = {**vars(args), "out": str(out), "work": str(work), "bare_steps": steps, "fedtumor": fedtumor_config}
    headers = ["app", "start-up s", "first round s", "steady round s", "overhead s/round"]
    rows = [
        [app, v["startup_s"], v["first_round_s"], v["steady_round_s"], v["overhead_s_per_round"]]
        for app, v in result["apps"].items()
    ]
    title = f"fedtumor against a bare Flower app: {args.sites} sites, {steps} steps of batch {BATCH} a site"
    print_table(console, title, headers, rows)
    measures = [
        [name, value, result["targets"][name], result["met"][name]] for name, value in result["measures"].items()
    ]
    print_table(console, "Targets", ["measure", "value", "target (at most)", "met"], measures)
    (out / "bench_vs_flower.md").write_text(
        markdown_table(headers, rows) + "\n" + markdown_table(["measure", "value", "target (at most)", "met"], measures)
    )
    plot(result, out / "bench_vs_flower.png", title)
    write_record(out / "bench_vs_flower.json", "vs-flower", settings, result, before)
    console.print(f"wrote {out / 'bench_vs_flower.json'}, bench_vs_flower.md, bench_vs_flower.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
