#!/usr/bin/env python
"""Federation overhead: a simulated round's wall time over the same training in one process.

For each amount of compute per round (`--local-epochs`, one value per row), runs

1. a real Flower simulation (scripts/simulate.py: SuperLink, ServerApp, Ray, one ClientApp
   per site) of ROUNDS rounds, with no held-out or site evaluation, so a round is training,
   serialisation, Ray dispatch and aggregation only; and
2. the same local training with no federation, in this one process: for each round and each
   site, the global model, the site's patches and a fresh Adam (the ClientApp's own
   ``train_site_round`` on the same seeded patches), one site after the other.

Both sides train one site at a time with the same PyTorch threads (`--torch-threads`,
default 1; Ray gets `--cpus-per-site`, default every core, so it runs one ClientApp at a
time just as the loop does). The in-process rounds are timed before and after the
simulation; the federated rounds inside the ServerApp (``round_wall_s`` in the run's
metrics.csv). The overhead ratio is the best federated round after the first (round 1 also
loads each site's data in its Ray worker) over the best in-process round after the first:
the machine is shared, and noise only ever adds time. A second ratio needs no second
measurement: the steady round's wall time over its sites' own training time (their
train-seconds, summed), i.e. what the federation adds around the training itself. The
fixed start-up cost (launch to round 1: SuperLink, ServerApp, Ray, initial model) is
reported separately, as is the in-process cost of loading the sites.

    python scripts/bench_overhead.py --out docs/bench --sites 4 --rounds 3 --local-epochs 1 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import Progress

from data_loaders.round_patches import round_patch_batches
from data_loaders.synthetic import generate_cohort
from fedtumor.baselines.sites import load_sites
from fedtumor.bench.flower_baseline import site_training_seconds
from fedtumor.bench.probe import round_progress, run_simulation, serverapp_round_seconds
from fedtumor.bench.report import machine, markdown_table, print_table, write_record
from fedtumor.core.config import RunConfig, fedtumor_home, read_run_config
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.core.losses import build_loss
from fedtumor.core.model import build_model
from fedtumor.core.training import resolve_device, train_site_round
from fedtumor.federation.settings import check_federation_keys

REPO = Path(__file__).resolve().parent.parent  # the Flower app the simulation runs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_overhead.json/.md/.png and runs")
    parser.add_argument(
        "--work", type=Path, default=None, help="cohorts, runs and logs (default: $FEDTUMOR_HOME/bench)"
    )
    parser.add_argument("--sites", type=int, default=4, help="simulated sites (default 4)")
    parser.add_argument("--subjects", type=int, default=16, help="synthetic training subjects (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per simulation, at least 2 (default 3)")
    parser.add_argument("--local-epochs", type=int, nargs="+", default=[1, 4], help="compute per round (default 1 4)")
    parser.add_argument(
        "--cpus-per-site",
        type=int,
        default=os.cpu_count() or 1,
        help="Ray CPUs per ClientApp (default all: one at a time)",
    )
    parser.add_argument("--torch-threads", type=int, default=1, help="PyTorch threads of every training (default 1)")
    parser.add_argument("--run-config", default="", help="more run-config overrides (model, patch size, ...)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: round 1 also loads the sites' data")
    return args


def in_process_rounds(config: RunConfig, sites, progress: Progress) -> list[float]:
    """Seconds of each round of the same training, one site after the other, no federation."""
    device = resolve_device(config.device)
    loss_fn = build_loss(config.loss)
    torch.manual_seed(config.seed)
    global_state = build_model(config.model, config.base_filters).state_dict()
    task = progress.add_task("in-process: site trainings", total=config.num_server_rounds * len(sites))
    seconds = []
    for server_round in range(1, config.num_server_rounds + 1):
        started = time.perf_counter()
        for site in sites:
            model = build_model(config.model, config.base_filters)
            model.load_state_dict(global_state)
            epoch_batches = round_patch_batches(site.train, config, site.site_id, server_round)
            train_site_round(
                model, epoch_batches, config.local_epochs, loss_fn, device, learning_rate=config.learning_rate
            )
            progress.advance(task)
        seconds.append(time.perf_counter() - started)
    progress.remove_task(task)
    return seconds


def main() -> int:
    args = parse_args()
    console = Console()
    before = machine()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or fedtumor_home() / "bench").expanduser().resolve()
    try:
        cohort = generate_cohort(
            work / f"overhead-cohort-{args.sites}-{args.subjects}", args.sites, args.subjects, seed=0, n_test=1
        ).root
        base = (
            f"data-dir='{cohort}' output-dir='{work / 'overhead-runs'}' num-server-rounds={args.rounds} "
            f"server-eval=false fraction-evaluate=0.0 min-available-nodes={args.sites} "
            f"torch-threads={args.torch_threads} {args.run_config}"
        )
        check_federation_keys(read_run_config(base, REPO))  # a bad override stops here
    except (ConfigError, DataError, ValueError) as exc:
        console.print(f"error: {exc}", style="bold red", highlight=False)
        return 2
    torch.set_num_threads(args.torch_threads)
    settings = {**vars(args), "out": str(out), "work": str(work), "run_config": base}
    rows, results = [], []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with Progress(console=console) as progress:
        for epochs in args.local_epochs:
            run_name = f"overhead-e{epochs}-{stamp}"
            run_config = f"{base} local-epochs={epochs} run-name='{run_name}'"
            config = read_run_config(run_config, REPO)
            started = time.perf_counter()
            sites = load_sites(config, args.sites)
            load_s = time.perf_counter() - started
            local = in_process_rounds(config, sites, progress)
            patches = sum(len(site.train) for site in sites) * config.samples_per_volume * epochs
            del sites
            task = progress.add_task(f"federated, {epochs} local epochs: rounds", total=args.rounds)
            timing = run_simulation(
                args.sites,
                run_config,
                flwr_home=work / "overhead-flwr-home",
                log_path=work / "overhead-logs" / f"e{epochs}.log",
                num_cpus=args.cpus_per_site,
                on_line=round_progress(progress, task, args.rounds),
                app_dir=REPO,
            )
            progress.remove_task(task)
            # In-process rounds on both sides of the simulation in time, so a drift in the
            # machine's load (it is shared) weighs on both measurements alike.
            sites = load_sites(config, args.sites)
            config_after = config.replace(num_server_rounds=1)
            local_after = in_process_rounds(config_after, sites, progress)
            del sites
            if not timing.ok:
                console.print(f"error: simulation failed ({timing.status}); log tail:\n{timing.log_tail}")
                return 1
            federated = serverapp_round_seconds(work / "overhead-runs" / run_name)
            # Best of the steady rounds on both sides: the machine is shared, and noise only adds time.
            steady_fed = min(federated[r] for r in federated if r >= 2)
            steady_local = min(local[1:] + local_after)
            # The same round's own training time, from its sites' train-seconds: a ratio that no
            # change in load between the two measurements can bias.
            training = site_training_seconds(work / "overhead-runs" / run_name)
            steady_round = min((r for r in federated if r >= 2), key=lambda r: federated[r])
            result = {
                "local_epochs": epochs,
                "patches_per_round": patches,
                "in_process_round_s": local,
                "in_process_round_after_s": local_after,
                "federated_round_s": federated,
                "steady_in_process_round_s": steady_local,
                "steady_federated_round_s": steady_fed,
                "overhead_ratio": steady_fed / steady_local,
                "federated_sites_training_s": training,
                "ratio_to_own_training": federated[steady_round] / training[steady_round],
                "overhead_s_per_round": steady_fed - steady_local,
                "federated_startup_s": timing.startup_s,
                "federated_wall_s": timing.wall_s,
                "in_process_site_loading_s": load_s,
                "peak_pss_mib": timing.peak_pss_mib,
            }
            results.append(result)
            rows.append(
                [
                    epochs,
                    steady_local,
                    steady_fed,
                    result["overhead_ratio"],
                    result["ratio_to_own_training"],
                    result["overhead_s_per_round"],
                    timing.startup_s,
                    load_s,
                ]
            )
            # Written after every row, so a long run interrupted later keeps what it measured.
            write_record(out / "bench_overhead.json", "overhead", settings, results, before)
            console.print(
                f"{epochs} local epochs ({patches} patches per round): in-process {steady_local:.1f}s, "
                f"federated {steady_fed:.1f}s per round, ratio {result['overhead_ratio']:.2f} "
                f"(to its own sites' training {result['ratio_to_own_training']:.2f})",
                highlight=False,
            )
    headers = [
        "local epochs",
        "in-process round s",
        "federated round s",
        "ratio",
        "ratio to its own training",
        "overhead s/round",
        "start-up s",
        "in-process data loading s",
    ]
    title = f"Federation overhead, {args.sites} sites trained one at a time, {args.torch_threads} thread(s) each"
    print_table(console, title, headers, rows)
    (out / "bench_overhead.md").write_text(markdown_table(headers, rows))
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    labels = [str(r["local_epochs"]) for r in results]
    width = 0.38
    positions = range(len(results))
    ax.bar(
        [p - width / 2 for p in positions], [r["steady_in_process_round_s"] for r in results], width, label="in-process"
    )
    ax.bar(
        [p + width / 2 for p in positions], [r["steady_federated_round_s"] for r in results], width, label="federated"
    )
    for p, r in zip(positions, results):
        ax.annotate(
            f"x{r['overhead_ratio']:.2f}", (p + width / 2, r["steady_federated_round_s"]), ha="center", va="bottom"
        )
    ax.set_xticks(list(positions), labels)
    ax.set_xlabel("local epochs per round")
    ax.set_ylabel("seconds per round")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.savefig(out / "bench_overhead.png", dpi=130)
    write_record(out / "bench_overhead.json", "overhead", settings, results, before)
    console.print(f"wrote {out / 'bench_overhead.json'}, bench_overhead.md, bench_overhead.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
