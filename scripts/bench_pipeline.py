#!/usr/bin/env python
"""Training patches per second from NIfTI, with and without the preprocessing cache.

Every epoch draws SAMPLES-PER-VOLUME patches from every subject through the training path
(`patch_queue` + `patch_batches`: augmentation, TorchIO queue, region targets), from three
sources of preprocessed subjects:

- nifti: no cache; every epoch reads the NIfTI files and preprocesses them again (resample,
  z-score, crop), as a pipeline without a cache would;
- disk cache: every epoch reads the preprocessed tensors from the cache (what a restarted
  ClientApp, or a new round in a fresh process, does); the cache is built beforehand, timed;
- memory: the subjects preprocessed once and held, as a long-lived ClientApp holds its site.

Reports patches per second for each and the ratios to `nifti`; writes JSON and a PNG.

    python scripts/bench_pipeline.py --out docs/bench --subjects 8 --epochs 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchio as tio
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import Progress

from data_loaders.layouts import discover_subjects
from data_loaders.pipelines import (
    PreprocessingSettings,
    augmentation_transform,
    patch_batches,
    patch_queue,
    preprocess_subject,
    preprocessing_transform,
    raw_subject,
)
from data_loaders.synthetic import generate_cohort
from fedtumor.bench.report import machine, markdown_table, print_table, write_record
from fedtumor.core.config import fedtumor_home
from fedtumor.core.errors import DataError
from fedtumor.core.regions import BRATS2021_LABELS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for bench_pipeline.json/.md/.png")
    parser.add_argument(
        "--work", type=Path, default=None, help="cohorts, runs and logs (default: $FEDTUMOR_HOME/bench)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="a cohort in a BraTS layout (default: synthetic)")
    parser.add_argument("--subjects", type=int, default=8, help="subjects to read (default 8)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per source (default 3)")
    parser.add_argument("--patch-size", type=int, default=48, help="patch edge in voxels (default 48, the demo's)")
    parser.add_argument("--samples-per-volume", type=int, default=4, help="patches per subject per epoch (default 4)")
    parser.add_argument("--batch-size", type=int, default=2, help="patches per batch (default 2)")
    parser.add_argument("--spacing-mm", type=float, default=3.0, help="resampling in mm (default 3.0, synthetic 64^3)")
    parser.add_argument("--no-augment", action="store_true", help="time the pipeline without augmentation")
    parser.add_argument("--torch-threads", type=int, default=1, help="as a simulated ClientApp (default 1)")
    return parser.parse_args()


def nifti_epoch_queue(files, settings, args) -> tio.Queue:
    """A queue whose dataset preprocesses each volume from NIfTI every time it is loaded."""
    steps = [preprocessing_transform(settings, files[0].layout)]
    if not args.no_augment:
        steps.append(augmentation_transform())
    dataset = tio.SubjectsDataset([raw_subject(f) for f in files], transform=tio.Compose(steps))
    return _queue(dataset, args)


def _queue(dataset: tio.SubjectsDataset, args) -> tio.Queue:
    labels = BRATS2021_LABELS
    sampler = tio.LabelSampler(
        args.patch_size,
        label_name="label",
        label_probabilities={0: 0.5, labels["NCR"]: 1 / 6, labels["ED"]: 1 / 6, labels["ET"]: 1 / 6},
    )
    return tio.Queue(
        dataset,
        max_length=max(16, args.samples_per_volume),
        samples_per_volume=args.samples_per_volume,
        sampler=sampler,
        num_workers=0,
    )


def drain(batches, progress: Progress, task) -> int:
    """Consume one epoch of training batches; returns the patches seen."""
    seen = 0
    for inputs, _targets in batches:
        seen += inputs.shape[0]
        progress.advance(task, inputs.shape[0])
    return seen


def time_source(name: str, make_batches, epochs: int, patches_per_epoch: int, progress: Progress) -> dict:
    task = progress.add_task(f"{name}: patches", total=epochs * patches_per_epoch)
    started = time.perf_counter()
    seen = sum(drain(make_batches(), progress, task) for _ in range(epochs))
    seconds = time.perf_counter() - started
    progress.remove_task(task)
    return {"source": name, "patches": seen, "seconds": seconds, "patches_per_s": seen / seconds}


def main() -> int:
    args = parse_args()
    console = Console()
    torch.set_num_threads(args.torch_threads)
    before = machine()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or fedtumor_home() / "bench").expanduser().resolve()
    try:
        root = (
            args.data_dir
            or generate_cohort(
                work / f"pipeline-cohort-{max(3, args.subjects)}", 1, max(3, args.subjects), seed=0, n_test=1
            ).root
        )
        files = sorted(discover_subjects(root), key=lambda f: f.subject_id)[: args.subjects]
    except (DataError, ValueError) as exc:
        console.print(f"error: {exc}", style="bold red", highlight=False)
        return 2
    files = [f for f in files if f.label is not None]
    if not files:
        console.print(f"error: no labelled subjects under {root}", style="bold red", highlight=False)
        return 2
    settings = PreprocessingSettings(spacing_mm=args.spacing_mm, min_shape=args.patch_size)
    per_epoch = len(files) * args.samples_per_volume
    cache = Path(tempfile.mkdtemp(prefix="bench-pipeline-cache-"))
    torch.manual_seed(0)
    results = []
    try:
        with Progress(console=console) as progress:
            results.append(
                time_source(
                    "nifti",
                    lambda: patch_batches(nifti_epoch_queue(files, settings, args), args.batch_size),
                    args.epochs,
                    per_epoch,
                    progress,
                )
            )
            started = time.perf_counter()
            held = [preprocess_subject(f, settings, cache) for f in files]
            cache_build_s = time.perf_counter() - started

            def from_disk_cache():
                subjects = [preprocess_subject(f, settings, cache) for f in files]
                return patch_batches(
                    patch_queue(subjects, args.patch_size, args.samples_per_volume, 16, not args.no_augment),
                    args.batch_size,
                )

            results.append(time_source("disk cache", from_disk_cache, args.epochs, per_epoch, progress))

            def from_memory():
                queue = patch_queue(held, args.patch_size, args.samples_per_volume, 16, not args.no_augment)
                return patch_batches(queue, args.batch_size)

            results.append(time_source("memory", from_memory, args.epochs, per_epoch, progress))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    baseline = results[0]["patches_per_s"]
    for row in results:
        row["ratio_to_nifti"] = row["patches_per_s"] / baseline
    # The batches are what the model trains on: 4 modalities in, 3 regions out, one patch each.
    inputs, targets = next(iter(patch_batches(patch_queue(held[:1], args.patch_size, 1, 1, False), 1)))
    if inputs.shape[1:] != (4, *(args.patch_size,) * 3) or targets.shape[1] != 3:
        console.print(f"error: unexpected batch shapes {tuple(inputs.shape)}, {tuple(targets.shape)}", style="bold red")
        return 1

    headers = ["source", "patches", "seconds", "patches/s", "x nifti"]
    rows = [[r["source"], r["patches"], r["seconds"], r["patches_per_s"], r["ratio_to_nifti"]] for r in results]
    title = f"Training patches from {len(files)} subjects, {args.patch_size}^3, {args.epochs} epochs"
    print_table(console, title, headers, rows)
    console.print(f"building the cache once took {cache_build_s:.1f}s for {len(files)} subjects")
    (out / "bench_pipeline.md").write_text(markdown_table(headers, rows))
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.barh([r["source"] for r in results], [r["patches_per_s"] for r in results], color="#0072B2")
    ax.set_xlabel("training patches per second")
    ax.set_title(title, fontsize=9)
    fig.savefig(out / "bench_pipeline.png", dpi=130)
    settings_record = {**vars(args), "out": str(out), "data_dir": str(root), "subjects": len(files)}
    results_record = {"sources": results, "cache_build_s": cache_build_s, "cache_ratio": results[1]["ratio_to_nifti"]}
    write_record(out / "bench_pipeline.json", "pipeline", settings_record, results_record, before)
    console.print(f"wrote {out / 'bench_pipeline.json'}, bench_pipeline.md, bench_pipeline.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
