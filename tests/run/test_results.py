"""Run folder writer, readers, plots and the `fedtumor report` command, on a fake run."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.core.errors import DataError
from fedtumor.run.plots import draw_run_plots
from fedtumor.run.writer import (
    METRICS_COLUMNS,
    RunWriter,
    git_revision,
    read_metrics,
    to_jsonable,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REGIONS = ("et", "tc", "wt")


# ----------------------------------------------------------------------------- fake run


def make_overlay_case(shape: tuple[int, int, int] = (64, 72, 60), seed: int = 0):
    """A head-like ellipsoid with texture and a nested blob tumour; the prediction is slightly off."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")).astype(np.float32)
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    brain = (((grid - centre) / (centre * 0.85)) ** 2).sum(axis=0) < 1
    image = np.where(brain, 1.0 + 0.15 * np.sin(grid[0] / 3) * np.cos(grid[2] / 4), 0.0)
    image = image + brain * rng.normal(0, 0.05, shape)

    def blob(offset, radius):
        tumour_centre = centre[:, 0, 0, 0] + np.array(offset, dtype=np.float32)
        distance = np.sqrt(((grid - tumour_centre[:, None, None, None]) ** 2).sum(axis=0))
        return distance < radius

    def tumour(offset, scale):
        label = np.zeros(shape, dtype=np.uint8)
        label[blob(offset, 13 * scale)] = 2  # oedema
        label[blob(offset, 8 * scale)] = 4  # enhancing rim
        label[blob(offset, 5 * scale)] = 1  # necrotic core
        return label

    reference = tumour((8, -6, 5), 1.0)
    prediction = tumour((9.5, -5, 4), 0.9)
    image = image + 0.6 * (reference == 2) + 1.2 * (reference == 4) - 0.4 * (reference == 1)
    return image.astype(np.float32), reference, prediction


def make_fake_run(
    run_dir: Path,
    rounds: int = 5,
    sites: int = 4,
    with_test: bool = True,
    with_overlay: bool = True,
    with_summary: bool = True,
    seed: int = 0,
) -> Path:
    """A run folder as the ServerApp writes it: Dice rising with noise, HD95 falling."""
    rng = np.random.default_rng(seed)
    writer = RunWriter(run_dir)
    writer.write_config({"strategy": "fedavg", "num-server-rounds": rounds, "lr": 5e-4})
    site_ids = [f"site-{i}" for i in range(1, sites + 1)]
    site_sizes = {site: int(n) for site, n in zip(site_ids, rng.integers(3, 30, sites))}
    site_skill = {site: rng.uniform(0.75, 1.0) for site in site_ids}
    ceiling = {"et": 0.72, "tc": 0.78, "wt": 0.88}

    def scores(progress: float, skill: float = 1.0):
        dice = {f"dice_{r}": float(np.clip(ceiling[r] * skill * progress + rng.normal(0, 0.02), 0, 1)) for r in REGIONS}
        hd95 = {
            f"hd95_{r}": float(373.1287 if progress == 0 else 4 + 60 * (1 - progress) + rng.uniform(0, 5))
            for r in REGIONS
        }
        return {**dice, **hd95}

    if with_test:
        writer.add_metrics(round=0, scope="global", split="test", metrics=scores(0.0))
    for round_ in range(1, rounds + 1):
        progress = 1 - 0.7**round_
        weighted = {}
        for site in site_ids:
            writer.add_metrics(
                round=round_,
                scope=site,
                split="train",
                metrics={"loss": 1.0 - 0.6 * progress + rng.normal(0, 0.03), "num_examples": site_sizes[site]},
            )
            site_scores = scores(progress, site_skill[site])
            writer.add_metrics(round=round_, scope=site, split="val", metrics=site_scores)
            for key, value in site_scores.items():
                weighted[key] = weighted.get(key, 0.0) + value * site_sizes[site] / sum(site_sizes.values())
        writer.add_metrics(round=round_, scope="global", split="val", metrics=weighted)
        if with_test:
            writer.add_metrics(round=round_, scope="global", split="test", metrics=scores(progress, 0.97))
    if with_overlay:
        image, reference, prediction = make_overlay_case()
        writer.write_overlay_case("FeTS2022_00042", image, reference, prediction, round=rounds)
    if with_summary:
        final = {key: np.float32(value) for key, value in scores(1 - 0.7**rounds, 0.97).items()}
        writer.write_summary(
            {
                "strategy": "fedavg",
                "rounds": rounds,
                "wall_time_s": np.float64(83.4),
                "final": final,
                "best": {**final, "round": np.int64(rounds)},
            }
        )
    return run_dir


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("runs") / "demo")


# ----------------------------------------------------------------------------- writer


def test_config_records_versions_and_git_revision(fake_run):
    record = json.loads((fake_run / "config.json").read_text())
    assert record["config"]["strategy"] == "fedavg"
    for key in ("python", "platform", "torch", "flwr", "monai", "torchio", "numpy", "fedtumor"):
        assert key in record["versions"]
    assert record["versions"]["numpy"] == np.__version__
    assert isinstance(record["git_revision"], str) and record["git_revision"]
    assert record["git_dirty"] in (True, False, None)
    assert record["created_utc"].endswith("+00:00")


def test_metrics_csv_has_exact_header_and_round_trips(tmp_path):
    writer = RunWriter(tmp_path / "nested" / "run")  # parents are created
    writer.add_metrics(
        round=0, scope="global", split="test", metrics={"dice_wt": np.float32(0.25), "hd95_wt": 373.1287}
    )
    writer.add_metrics(round=1, scope="site-3", split="train", metrics={"loss": 0.5, "num_examples": 12})
    # Rows are on disk as soon as add_metrics returns, header only once.
    lines = (writer.metrics_path).read_text().splitlines()
    assert lines[0] == "round,scope,split,metric,value"
    assert len(lines) == 5
    with writer.metrics_path.open() as handle:
        assert tuple(next(csv.reader(handle))) == METRICS_COLUMNS

    frame = read_metrics(writer.run_dir)
    assert list(frame.columns) == list(METRICS_COLUMNS)
    assert frame["round"].tolist() == [0, 0, 1, 1]
    assert frame["scope"].tolist() == ["global", "global", "site-3", "site-3"]
    assert frame["metric"].tolist() == ["dice_wt", "hd95_wt", "loss", "num_examples"]
    assert frame["value"].tolist() == pytest.approx([0.25, 373.1287, 0.5, 12])


def test_add_metrics_rejects_unknown_split_and_non_numbers(tmp_path):
    writer = RunWriter(tmp_path / "run")
    with pytest.raises(ValueError, match="split"):
        writer.add_metrics(round=1, scope="global", split="validation", metrics={"loss": 1.0})
    with pytest.raises(ValueError, match="loss"):
        writer.add_metrics(round=1, scope="global", split="val", metrics={"loss": "high"})


def test_writer_refuses_a_folder_that_already_holds_a_run(fake_run):
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunWriter(fake_run)
    RunWriter(fake_run, exist_ok=True)  # explicit append is allowed


def test_summary_converts_numpy_types(fake_run):
    summary = json.loads((fake_run / "summary.json").read_text())
    assert isinstance(summary["final"]["dice_wt"], float)
    assert summary["best"]["round"] == 5
    assert summary["wall_time_s"] == pytest.approx(83.4)
    assert to_jsonable({"a": np.arange(3), "b": np.float64("nan"), "c": (np.bool_(True), Path("/x"))}) == {
        "a": [0, 1, 2],
        "b": None,
        "c": [True, "/x"],
    }


def test_model_path_stays_inside_the_run_folder(tmp_path):
    writer = RunWriter(tmp_path / "run")
    assert writer.model_path("final_model.pt") == tmp_path / "run" / "final_model.pt"
    with pytest.raises(ValueError):
        writer.model_path("../elsewhere.pt")


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_revision_reads_a_repository_and_never_fails(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    sha, dirty = git_revision([repo])
    assert len(sha) == 40 and dirty is False
    (repo / "a.txt").write_text("changed")
    assert git_revision([repo])[1] is True
    assert git_revision([tmp_path / "not-a-repo"]) == ("unknown", None)


def test_read_metrics_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="missing-run"):
        read_metrics(tmp_path / "missing-run")
    (tmp_path / "run").mkdir()
    with pytest.raises(DataError, match="metrics.csv"):
        read_metrics(tmp_path / "run")
    (tmp_path / "run" / "metrics.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="header"):
        read_metrics(tmp_path / "run")
    (tmp_path / "run" / "metrics.csv").write_text("round,scope,split,metric,value\n1,global,val,dice_wt,oops\n")
    with pytest.raises(DataError, match="line 2"):
        read_metrics(tmp_path / "run")


# ----------------------------------------------------------------------------- plots


def _assert_png(path: Path, min_kb: int = 10) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_kb * 1024, f"{path} is only {len(data)} bytes"


def test_draw_run_plots_writes_all_pngs(fake_run):
    import matplotlib.pyplot as plt

    paths = draw_run_plots(fake_run)
    assert [p.name for p in paths] == [
        "dice_per_round.png",
        "hd95_per_round.png",
        "site_dice.png",
        "prediction_overlay.png",
    ]
    for path in paths:
        _assert_png(path)
    assert plt.get_fignums() == []  # no pyplot figures left behind


def test_draw_run_plots_tolerates_missing_test_split_and_overlay(tmp_path):
    run = make_fake_run(tmp_path / "no-test", rounds=2, with_test=False, with_overlay=False, with_summary=False)
    paths = draw_run_plots(run)
    assert [p.name for p in paths] == ["dice_per_round.png", "hd95_per_round.png", "site_dice.png"]
    for path in paths:
        _assert_png(path)


def test_draw_run_plots_with_only_round_zero(tmp_path):
    writer = RunWriter(tmp_path / "fresh")
    writer.add_metrics(round=0, scope="global", split="test", metrics={"dice_wt": 0.0, "hd95_wt": 373.1287})
    paths = draw_run_plots(writer.run_dir)
    assert [p.name for p in paths] == ["dice_per_round.png", "hd95_per_round.png", "site_dice.png"]
    for path in paths:
        _assert_png(path, min_kb=5)


def test_overlay_with_empty_reference_falls_back(tmp_path):
    writer = RunWriter(tmp_path / "run")
    image, _, prediction = make_overlay_case(shape=(32, 32, 32))
    path = writer.write_overlay_case("empty", image, np.zeros_like(prediction), np.zeros_like(prediction), round=0)
    from fedtumor.run.overlay_plot import plot_overlay

    _assert_png(plot_overlay(path, tmp_path / "overlay.png"))


# ----------------------------------------------------------------------------- report command


def test_report_prints_round_table(fake_run):
    result = CliRunner().invoke(app, ["report", str(fake_run)], terminal_width=120)
    assert result.exit_code == 0, result.output
    test_rows = read_metrics(fake_run).query("scope == 'global' and split == 'test' and metric == 'dice_wt'")
    last_wt = test_rows.sort_values("round")["value"].iloc[-1]
    assert f"{last_wt:.3f}" in result.output
    assert "fedavg" in result.output
    assert "prediction_overlay.png" in result.output


def test_report_on_missing_folder_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "no-such-run"
    result = CliRunner().invoke(app, ["report", str(missing)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0]


def test_report_on_folder_without_metrics_is_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "metrics.csv" in result.output and "Traceback" not in result.output


def test_report_says_a_failed_run_stopped_and_why(tmp_path):
    run = make_fake_run(tmp_path / "failed", rounds=2, with_overlay=False)
    summary = json.loads((run / "summary.json").read_text())
    summary.update(status="failed", error="round 3: 1 of 3 sites returned a usable update", last_completed_round=2)
    (run / "summary.json").write_text(json.dumps(summary))
    result = CliRunner().invoke(app, ["report", str(run)], terminal_width=200)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # the console may wrap the line
    assert "failed after round 2: round 3: 1 of 3 sites returned a usable update" in output
    completed = CliRunner().invoke(app, ["report", str(make_fake_run(tmp_path / "ok", rounds=2))], terminal_width=200)
    assert "failed after" not in completed.output
