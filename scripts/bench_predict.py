#!/usr/bin/env python
"""Seconds and peak memory of `fedtumor predict` on one case, for the demo and the FeTS reference network.

Each network (untrained, seeded: timing and memory do not depend on the weights) predicts the
case in a fresh process: read and validate the four images, preprocess at the network's
spacing, sliding-window inference, resample back to the input grid, mask to the brain, write.
Peak memory is the process's high-water RSS (VmHWM, imports included); on CUDA also
torch.cuda.max_memory_allocated. Each network runs --repeats times; the table keeps the
shortest time and the largest memory. Writes bench_predict.json/.md/.png under --out.

    python scripts/bench_predict.py --subject ../shared/realdata/brats2023/BraTS-GLI-00001-000 \\
        --out docs/bench --device cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from data_loaders.prediction_profile import (
    DEMO_NETWORK,
    REFERENCE_NETWORK,
    NetworkSpec,
    PredictionProfile,
    best_of,
    profile_in_fresh_process,
)
from fedtumor.bench.report import machine, markdown_table, print_table, write_record

HEADERS = ("network", "filters", "patch", "device", "min s", "min CPU s", "max peak MB", "before MB", "CUDA MB")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subject", type=Path, required=True, help="one subject folder in a BraTS layout")
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_predict.json/.md/.png")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the network runs")
    parser.add_argument("--spacing-mm", type=float, default=1.0, help="preprocessing spacing (default 1.0: native)")
    parser.add_argument(
        "--networks", choices=("demo", "reference", "both"), default="both", help="which networks (default both)"
    )
    parser.add_argument("--torch-threads", type=int, default=0, help="PyTorch threads (0: every core)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="fresh processes per network; shortest time, largest memory (default 3)"
    )
    return parser.parse_args()


def _networks(choice: str, spacing_mm: float) -> list[NetworkSpec]:
    chosen = {"demo": [DEMO_NETWORK], "reference": [REFERENCE_NETWORK]}.get(choice, [DEMO_NETWORK, REFERENCE_NETWORK])
    return [NetworkSpec(n.model, n.base_filters, n.patch_size, spacing_mm) for n in chosen]


def _row(profile: PredictionProfile) -> list:
    network = profile.network
    return [
        network.model,
        network.base_filters,
        f"{network.patch_size}^3",
        profile.device,
        profile.predict_seconds,
        profile.cpu_seconds,
        profile.peak_rss_mb,
        profile.rss_before_mb,
        profile.cuda_peak_mb,
    ]


def _figure(profiles: list[PredictionProfile], path: Path, loadavg: list[float]) -> None:
    from matplotlib.figure import Figure  # here: each spawned profile re-imports this script's imports

    fig = Figure(figsize=(7, 3.2), layout="constrained")
    seconds_axis, memory_axis = fig.subplots(1, 2)
    names = [p.network.label for p in profiles]
    seconds_axis.barh(names, [p.predict_seconds for p in profiles], color="tab:blue")
    seconds_axis.set_xlabel("seconds per case")
    memory_axis.barh(names, [p.peak_rss_mb for p in profiles], color="tab:orange", label="peak RSS")
    memory_axis.barh(names, [p.rss_before_mb for p in profiles], color="tab:gray", label="before the case")
    memory_axis.axvline(2048, color="tab:red", linestyle="--", label="2 GB budget")
    memory_axis.set_xlabel("MB")
    memory_axis.set_yticks([])
    memory_axis.legend(loc="lower right", fontsize=7)
    load = ", ".join(f"{x:.1f}" for x in loadavg)
    fig.suptitle(f"predict one case on {profiles[0].device} (load average {load})", fontsize=10)
    fig.savefig(path, dpi=130)


def main() -> int:
    args = parse_args()
    console = Console()
    if not args.subject.is_dir():
        console.print(f"[red]error:[/] {args.subject}: subject folder does not exist", highlight=False)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            console.print("[red]error:[/] --device cuda: no CUDA GPU on this machine", highlight=False)
            return 2
    if args.repeats < 1:
        console.print(f"[red]error:[/] --repeats must be >= 1, got {args.repeats}", highlight=False)
        return 2
    before = machine()
    networks = _networks(args.networks, args.spacing_mm)
    runs: dict[NetworkSpec, list[PredictionProfile]] = {network: [] for network in networks}
    with Progress(console=console) as bar:
        task = bar.add_task(f"predict {args.subject.name}", total=len(networks) * args.repeats)
        for network in networks:
            for _ in range(args.repeats):
                run = profile_in_fresh_process(args.subject, network, args.device, args.torch_threads)
                runs[network].append(run)
                bar.console.print(f"{network.label}: {run.predict_seconds:.1f}s, peak {run.peak_rss_mb:.0f} MB")
                bar.advance(task)
    profiles = [best_of(repeats) for repeats in runs.values()]
    rows = [_row(p) for p in profiles]
    grid = "x".join(map(str, profiles[0].input_shape))
    print_table(console, f"predict {args.subject.name} ({grid}, {args.spacing_mm:g} mm)", HEADERS, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_predict.md").write_text(markdown_table(HEADERS, rows))
    _figure(profiles, args.out / "bench_predict.png", before["loadavg"])
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results = {
        "best": [p.as_record() for p in profiles],
        "runs": [p.as_record() for repeats in runs.values() for p in repeats],
    }
    write_record(args.out / "bench_predict.json", "predict", settings, results, before)
    console.print(f"wrote {args.out / 'bench_predict.json'}, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
