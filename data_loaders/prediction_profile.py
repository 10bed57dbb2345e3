"""Time and peak memory of predicting one case, each network measured in a fresh process.

A process's peak resident memory only grows, so every profile runs in its own spawned
interpreter: its peak is that of importing torch/MONAI/TorchIO, loading the checkpoint and
predicting the case, nothing else. ``scripts/bench_predict.py`` prints and records the results.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

MIB = 2**20


@dataclass(frozen=True)
class NetworkSpec:
    """A network as a checkpoint records it: name, base filters, patch edge, preprocessing spacing."""

    model: str
    base_filters: int
    patch_size: int
    spacing_mm: float = 1.0

    def __post_init__(self) -> None:
        if self.base_filters < 1 or self.patch_size < 16 or self.spacing_mm <= 0:
            raise ValueError(f"invalid network spec {self}")

    @property
    def label(self) -> str:
        return f"{self.model} ({self.base_filters} filters)"


DEMO_NETWORK = NetworkSpec("unet", 8, 64)
REFERENCE_NETWORK = NetworkSpec("fets-resunet", 32, 128)


@dataclass(frozen=True)
class PredictionProfile:
    network: NetworkSpec
    device: str
    torch_threads: int
    load_seconds: float  # checkpoint -> model on the device
    predict_seconds: float  # read, preprocess, sliding window, resample back, mask, write
    cpu_seconds: float  # CPU time of those, every thread: steadier than wall time on a shared machine
    rss_before_mb: float  # after imports and the model load: what the case itself adds is the difference
    peak_rss_mb: float  # the process's high-water mark (VmHWM), imports included
    cuda_peak_mb: float | None  # torch.cuda.max_memory_allocated during the prediction; None on CPU
    input_shape: tuple[int, ...]
    labelled_voxels: int

    def as_record(self) -> dict:
        return asdict(self)


def _rss_mb(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process in MiB (Linux); ru_maxrss where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def profile_prediction(subject_dir: Path, network: NetworkSpec, device: str = "cpu", torch_threads: int = 0):
    """Profile one prediction of ``subject_dir`` in this process with an untrained ``network`` checkpoint.

    Example:
        >>> profile = profile_prediction(Path("BraTS-GLI-00001-000"), DEMO_NETWORK, device="cpu")
        >>> profile.peak_rss_mb < 2048
        True
    """
    import nibabel as nib
    import torch

    from data_loaders.inference import Predictor, write_segmentation
    from data_loaders.layouts import find_subject
    from fedtumor.core.config import RunConfig
    from fedtumor.core.model import build_model
    from fedtumor.run.checkpoint import save_checkpoint

    if torch_threads:
        torch.set_num_threads(torch_threads)
    torch.manual_seed(0)
    config = RunConfig(
        model=network.model,
        base_filters=network.base_filters,
        patch_size=network.patch_size,
        spacing_mm=network.spacing_mm,
    )
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as work:
        untrained = build_model(network.model, network.base_filters).state_dict()
        checkpoint = save_checkpoint(Path(work) / "model.pt", untrained, config)
        start = time.perf_counter()
        predictor = Predictor.load(checkpoint, device)
        predictor.model.to(predictor.device)
        load_seconds = time.perf_counter() - start
        files = find_subject(subject_dir)
        cuda = predictor.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        rss_before = _rss_mb("VmRSS")
        start, cpu_start = time.perf_counter(), time.process_time()
        out = write_segmentation(predictor.segment(files).image, Path(work) / "prediction.nii.gz")
        predict_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        cuda_peak = torch.cuda.max_memory_allocated() / MIB if cuda else None
        written = nib.load(out)
        labelled = int(np.count_nonzero(np.asarray(written.dataobj)))
        shape = tuple(int(n) for n in written.shape)
    return PredictionProfile(
        network=network,
        device=str(predictor.device),
        torch_threads=torch.get_num_threads(),
        load_seconds=load_seconds,
        predict_seconds=predict_seconds,
        cpu_seconds=cpu_seconds,
        rss_before_mb=rss_before,
        # Linux refreshes its recorded high-water mark only at some events (VmHWM reads the larger of it and
        # the current RSS), so a later VmHWM can be below an RSS measured earlier: that RSS was reached.
        peak_rss_mb=max(_rss_mb("VmHWM"), rss_before),
        cuda_peak_mb=cuda_peak,
        input_shape=shape,
        labelled_voxels=labelled,
    )


def best_of(repeats: Sequence[PredictionProfile]) -> PredictionProfile:
    """One profile for repeats of one network: the shortest times (a shared machine only ever adds
    to them) and the largest memory (the budget is about the worst case).

    Example:
        >>> best = best_of([profile_in_fresh_process(case, DEMO_NETWORK) for _ in range(3)])
    """
    if not repeats or len({p.network for p in repeats}) != 1:
        raise ValueError("best_of needs at least one profile, all of the same network")
    cuda = [p.cuda_peak_mb for p in repeats if p.cuda_peak_mb is not None]
    return replace(
        repeats[0],
        load_seconds=min(p.load_seconds for p in repeats),
        predict_seconds=min(p.predict_seconds for p in repeats),
        cpu_seconds=min(p.cpu_seconds for p in repeats),
        rss_before_mb=max(p.rss_before_mb for p in repeats),
        peak_rss_mb=max(p.peak_rss_mb for p in repeats),
        cuda_peak_mb=max(cuda) if cuda else None,
    )


def profile_in_fresh_process(
    subject_dir: Path, network: NetworkSpec, device: str = "cpu", torch_threads: int = 0
) -> PredictionProfile:
    """:func:`profile_prediction` in a newly spawned interpreter, so its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(profile_prediction, Path(subject_dir), network, device, torch_threads).result()
