"""The performance benchmarks run end to end at toy sizes and write what they promise."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests import REPO

TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=4"


def run(*args, timeout=600, home=None):
    env = {**os.environ, **({"FEDTUMOR_HOME": str(home)} if home else {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_bench_gpu_refuses_without_cuda_in_one_line(tmp_path):
    completed = run("scripts/bench_gpu.py", "--out", str(tmp_path))
    assert completed.returncode == 3
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bench_gpu.py needs a CUDA GPU"), completed.stderr
    assert not (tmp_path / "bench_gpu.json").exists()


def test_bench_gpu_cpu_smoke_mode_trains_each_site_and_records_the_machine(tmp_path):
    completed = run(
        "scripts/bench_gpu.py", "--out", str(tmp_path), "--device", "cpu", "--model", "unet", "--base-filters", "4",
        "--patch-size", "32", "--sites", "2", "--patches-per-site", "2", "--work", str(tmp_path / "work"),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads((tmp_path / "bench_gpu.json").read_text())
    sites = record["results"]["in_process"]
    assert [s["site"] for s in sites] == ["site-1", "site-2"]
    assert all(s["patches"] == 2 and s["patches_per_s"] > 0 for s in sites)
    assert len(record["machine"]["loadavg"]) == 3 and record["settings"]["gpu"].startswith("none")
    assert (tmp_path / "bench_gpu.png").stat().st_size > 0


def test_bench_pipeline_times_nifti_disk_cache_and_memory(tmp_path):
    completed = run(
        "scripts/bench_pipeline.py", "--out", str(tmp_path), "--subjects", "3", "--epochs", "1",
        "--patch-size", "32", "--samples-per-volume", "2", "--work", str(tmp_path / "work"), timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads((tmp_path / "bench_pipeline.json").read_text())
    sources = {s["source"]: s for s in record["results"]["sources"]}
    assert set(sources) == {"nifti", "disk cache", "memory"}
    assert all(s["patches"] == 6 for s in sources.values())  # 3 subjects x 2 patches, every source
    assert sources["nifti"]["ratio_to_nifti"] == 1.0
    assert record["results"]["cache_ratio"] == pytest.approx(
        sources["disk cache"]["patches_per_s"] / sources["nifti"]["patches_per_s"]
    )
    assert (tmp_path / "bench_pipeline.png").stat().st_size > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_bench_overhead_compares_a_real_simulation_with_the_same_training_in_process(tmp_path):
    completed = run(
        "scripts/bench_overhead.py", "--out", str(tmp_path), "--sites", "2", "--subjects", "6", "--rounds", "2",
        "--local-epochs", "1", "--run-config", TINY, home=tmp_path / "home",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (row,) = json.loads((tmp_path / "bench_overhead.json").read_text())["results"]
    assert sorted(map(int, row["federated_round_s"])) == [1, 2] and len(row["in_process_round_s"]) == 2
    assert row["overhead_ratio"] == pytest.approx(row["steady_federated_round_s"] / row["steady_in_process_round_s"])
    # Sites train one at a time inside the round, so the round lasts at least their training.
    assert row["ratio_to_own_training"] >= 1.0 and set(row["federated_sites_training_s"]) == {"1", "2"}
    assert row["federated_startup_s"] > 1 and row["peak_pss_mib"] > 100
    assert (tmp_path / "bench_overhead.png").stat().st_size > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_bench_scale_runs_each_federation_size_and_measures_memory(tmp_path):
    completed = run(
        "scripts/bench_scale.py", "--out", str(tmp_path), "--sites", "2", "3", "--subjects", "9", "--rounds", "1",
        home=tmp_path / "home",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_scale.json").read_text())["results"]
    assert [r["sites"] for r in rows] == [2, 3]
    for row in rows:
        assert row["first_round_s"] > 0 and row["startup_s"] > 0
        assert row["peak_pss_mib"] > 100 and row["parallel_client_actors"] >= 1
    assert rows[0]["round_growth"] == 1.0 and rows[0]["memory_growth"] == 1.0
    assert (tmp_path / "bench_scale.png").stat().st_size > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_bench_vs_flower_runs_the_bare_flower_app_and_fedtumor_side_by_side(tmp_path):
    completed = run(
        "scripts/bench_vs_flower.py", "--out", str(tmp_path), "--sites", "2", "--subjects", "6", "--rounds", "3",
        "--samples-per-volume", "2", "--base-filters", "4", "--work", str(tmp_path / "work"), home=tmp_path / "home",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads((tmp_path / "bench_vs_flower.json").read_text())["results"]
    for app in ("bare Flower", "fedtumor"):
        run_ = result["runs"][app]
        assert sorted(map(int, run_["round_s"])) == [1, 2, 3] and sorted(map(int, run_["training_s"])) == [1, 2, 3]
        assert result["apps"][app]["startup_s"] > 1
    assert set(result["met"]) == {"per_round_overhead_s", "startup_ratio", "first_round_ratio"}
    assert (tmp_path / "bench_vs_flower.png").stat().st_size > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_bench_messages_times_a_live_federation_and_the_parts_of_a_message(tmp_path):
    completed = run("scripts/bench_messages.py", "--out", str(tmp_path), "--rounds", "2", "--repeats", "1")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads((tmp_path / "bench_messages.json").read_text())["results"]
    assert len(result["live_fixed_cost_per_message_s"]) == 1  # round 2: round 1 also starts the sites
    parts = result["parts_s"]
    assert parts["import client_app.app"] > parts["import torch"] > parts["interpreter (python -c pass)"]
    assert result["ratio_to_import_torch"] == pytest.approx(
        result["median_fixed_cost_per_message_s"] / parts["import torch"]
    )
