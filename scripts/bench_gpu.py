#!/usr/bin/env python
"""GPU: one round of the FeTS reference network with mixed precision, per site.

Part 1 (always): one federated round's local training, done here site after site on the
GPU: the FeTS 2021 reference network (`fets-resunet`: 3D residual U-Net, 32 base filters,
instance norm), 64^3 patches, batch 1, Adam, Dice+BCE, under `torch.autocast` with a
gradient scaler (fedtumor.core.training.train_epochs turns both on for CUDA). Patches are drawn
once and kept on the device, so this is the network's own speed: patches per second per
site and peak GPU memory (`torch.cuda.max_memory_allocated`, reset per site).

Part 2 (`--federation`): the same round as a real Flower simulation on a synthetic cohort,
one ClientApp per site sharing the GPU through Ray's fractional GPUs
(`client-resources-num-gpus`, e.g. 0.25 lets four sites train at once), with
`device='cuda'`; reports each site's patches per second from the run's metrics and the
GPU memory in use (nvidia-smi, sampled).

Without a CUDA device it refuses with exit code 3, unless `--device cpu` (a smoke mode that
checks the code path in seconds; its numbers are not a GPU benchmark).

    python scripts/bench_gpu.py --out docs/bench --sites 4 --patches-per-site 40 --federation --num-gpus 0.25
    python scripts/bench_gpu.py --out /tmp/gpu-smoke --device cpu --model unet --base-filters 4 --patch-size 32
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import Progress

from fedtumor.bench.report import machine, markdown_table, print_table, write_record
from fedtumor.core.config import fedtumor_home
from fedtumor.core.losses import build_loss
from fedtumor.core.model import build_model, count_parameters
from fedtumor.core.training import resolve_device, train_epochs

REPO = Path(__file__).resolve().parent.parent  # the Flower app the benchmark simulates
EXIT_NO_GPU = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_gpu.json/.md/.png")
    parser.add_argument(
        "--work", type=Path, default=None, help="cohorts, runs and logs (default: $FEDTUMOR_HOME/bench)"
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cuda, or cpu for the smoke mode")
    parser.add_argument("--sites", type=int, default=4, help="sites in the round (default 4)")
    parser.add_argument("--patches-per-site", type=int, default=40, help="training patches per site (default 40)")
    parser.add_argument("--model", default="fets-resunet", help="network (default fets-resunet)")
    parser.add_argument("--base-filters", type=int, default=32, help="base filters (default 32, the FeTS reference)")
    parser.add_argument("--patch-size", type=int, default=64, help="patch edge (default 64)")
    parser.add_argument("--batch-size", type=int, default=1, help="patches per step (default 1, FeTS)")
    parser.add_argument("--federation", action="store_true", help="also run the round as a Flower simulation")
    parser.add_argument("--num-gpus", type=float, default=0.25, help="GPU fraction per simulated ClientApp")
    parser.add_argument("--subjects-per-site", type=int, default=4, help="synthetic subjects per site (federation)")
    return parser.parse_args()


def site_round(model_state, args, device: torch.device, seed: int) -> dict:
    """One site's local training of one round; patches pre-drawn on the device."""
    torch.manual_seed(seed)
    shape = (args.batch_size, 4, *(args.patch_size,) * 3)
    batches = []
    for _ in range(max(1, args.patches_per_site // args.batch_size)):
        inputs = torch.randn(shape, device=device)
        targets = (torch.rand((args.batch_size, 3, *(args.patch_size,) * 3), device=device) > 0.9).float()
        batches.append((inputs, targets))
    model = build_model(args.model, args.base_filters)
    model.load_state_dict(model_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)  # the FeTS reference learning rate
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    stats = train_epochs(model, lambda: iter(batches), 1, optimizer, build_loss("dicece"), device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak_mib = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # CPU smoke: this process's peak RSS
    )
    return {
        "patches": stats.num_patches,
        "seconds": seconds,
        "patches_per_s": stats.num_patches / seconds,
        "peak_mib": peak_mib,
    }


class GpuMemorySampler(threading.Thread):
    """Peak `memory.used` of GPU 0 from nvidia-smi (every process on it: all the ClientApps)."""

    def __init__(self, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.peak_mib = 0.0
        self.interval_s = interval_s
        self._halt = threading.Event()

    def run(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        while not self._halt.is_set():
            done = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
                check=False,
            )
            try:
                self.peak_mib = max(self.peak_mib, float(done.stdout.strip().splitlines()[0]))
            except (ValueError, IndexError):
                pass
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def federated_round(args, work: Path, console: Console) -> dict:
    """The same round through Flower with fractional GPUs; per-site speed from metrics.csv."""
    from data_loaders.synthetic import generate_cohort
    from fedtumor.bench.probe import run_simulation
    from fedtumor.run.writer import read_metrics

    cohort = generate_cohort(
        work / f"gpu-cohort-{args.sites}x{args.subjects_per_site}",
        args.sites,
        args.sites * args.subjects_per_site,
        seed=0,
        shape=128,
        n_test=1,
    ).root
    run_name = f"gpu-{time.strftime('%Y%m%d-%H%M%S')}"
    samples = max(1, args.patches_per_site // max(1, args.subjects_per_site - 1))
    run_config = (
        f"data-dir='{cohort}' output-dir='{work / 'gpu-runs'}' run-name='{run_name}' num-server-rounds=1 "
        f"server-eval=false fraction-evaluate=0.0 min-available-nodes={args.sites} device='{args.device}' "
        f"model='{args.model}' base-filters={args.base_filters} patch-size={args.patch_size} "
        f"batch-size={args.batch_size} samples-per-volume={samples} queue-length={max(16, samples)} "
        "spacing-mm=1.5 learning-rate=5e-5 loss='dicece' torch-threads=1"
    )
    sampler = GpuMemorySampler()
    sampler.start()
    try:
        timing = run_simulation(
            args.sites,
            run_config,
            flwr_home=work / "gpu-flwr-home",
            log_path=work / "gpu-logs" / f"{run_name}.log",
            num_cpus=1,
            num_gpus=args.num_gpus if args.device == "cuda" else 0.0,
            app_dir=REPO,
        )
    finally:
        sampler.stop()
    if not timing.ok:
        console.print(f"error: simulation {timing.status}; log tail:\n{timing.log_tail}")
        return {"ok": False, "status": timing.status}
    metrics = read_metrics(work / "gpu-runs" / run_name)
    train = metrics[(metrics["split"] == "train") & (metrics["scope"] != "global")]
    per_site = {}
    for site, rows in train.groupby("scope"):
        values = dict(zip(rows["metric"], rows["value"]))
        per_site[site] = {
            "patches": values["num_patches"],
            "seconds": values["train_seconds"],
            "patches_per_s": values["num_patches"] / values["train_seconds"],
        }
    return {
        "ok": True,
        "round_s": timing.round_seconds(),
        "startup_s": timing.startup_s,
        "gpu_memory_used_peak_mib": sampler.peak_mib,
        "per_site": per_site,
    }


def main() -> int:
    args = parse_args()
    console = Console()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: bench_gpu.py needs a CUDA GPU and torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}); use --device cpu for the smoke mode",
            file=sys.stderr,
        )
        return EXIT_NO_GPU
    device = resolve_device(args.device)
    before = machine()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or fedtumor_home() / "bench").expanduser().resolve()
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU smoke mode)"
    torch.manual_seed(0)
    model = build_model(args.model, args.base_filters)
    state = model.state_dict()
    sites = []
    with Progress(console=console) as progress:
        task = progress.add_task("in-process round: sites", total=args.sites)
        for site in range(1, args.sites + 1):
            sites.append({"site": f"site-{site}", **site_round(state, args, device, seed=site)})
            progress.advance(task)
    federation = federated_round(args, work, console) if args.federation else None

    headers = ["site", "patches", "seconds", "patches/s", "peak GPU MiB" if device.type == "cuda" else "peak RSS MiB"]
    rows = [[s["site"], s["patches"], s["seconds"], s["patches_per_s"], s["peak_mib"]] for s in sites]
    title = (
        f"{args.model} ({args.base_filters} filters, {count_parameters(model):,} parameters), "
        f"{args.patch_size}^3 patches, batch {args.batch_size}, on {gpu_name}"
        + (", mixed precision" if device.type == "cuda" else ", float32")
    )
    print_table(console, title, headers, rows)
    markdown = markdown_table(headers, rows)
    if federation and federation["ok"]:
        fed_headers = ["site", "patches", "seconds", "patches/s"]
        fed_rows = [
            [s, v["patches"], v["seconds"], v["patches_per_s"]] for s, v in sorted(federation["per_site"].items())
        ]
        print_table(console, f"Flower simulation, {args.num_gpus:g} GPU per ClientApp", fed_headers, fed_rows)
        console.print(
            f"round {statistics.fmean(federation['round_s'].values()):.1f}s, start-up {federation['startup_s']:.1f}s, "
            f"GPU memory in use at peak {federation['gpu_memory_used_peak_mib']:,.0f} MiB"
        )
        markdown += "\n" + markdown_table(fed_headers, fed_rows)
    (out / "bench_gpu.md").write_text(markdown)
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.bar([s["site"] for s in sites], [s["patches_per_s"] for s in sites], color="#009E73", label="in-process")
    if federation and federation["ok"]:
        names = sorted(federation["per_site"])
        ax.plot(
            names, [federation["per_site"][n]["patches_per_s"] for n in names], "o", color="#D55E00", label="Flower"
        )
    ax.set_ylabel("training patches per second")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.savefig(out / "bench_gpu.png", dpi=130)
    settings = {**vars(args), "out": str(out), "gpu": gpu_name, "parameters": count_parameters(model)}
    results = {"in_process": sites, "federation": federation}
    write_record(out / "bench_gpu.json", "gpu", settings, results, before)
    console.print(f"wrote {out / 'bench_gpu.json'}, bench_gpu.md, bench_gpu.png")
    return 0 if not federation or federation["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
