"""The cross-site matrix files: models by evaluating sites, values that read back, a heatmap PNG."""

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fedtumor.core.metrics import mean_dice
from fedtumor.run.cross_site import (
    CROSS_SITE_METRICS,
    GLOBAL_MODEL,
    cross_site_metrics,
    matrix_cells,
    personal_model,
    read_cross_site,
    write_cross_site,
)
from fedtumor.run.files import CROSS_SITE_FILE, CROSS_SITE_PNG, CROSS_SITE_SCORES_FILE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scores(rng: np.random.Generator, sites: list[str], models: list[str]) -> dict:
    return {
        model: {site: {name: float(rng.uniform(0, 1)) for name in CROSS_SITE_METRICS} for site in sites}
        for model in models
    }


def test_matrix_has_a_row_per_model_a_column_per_site_and_the_mean_dice_values(tmp_path):
    rng = np.random.default_rng(0)
    sites = ["site-10", "site-2", "site-1"]
    models = [GLOBAL_MODEL, personal_model("site-2"), personal_model("site-10")]
    scores = _scores(rng, sites, models)
    paths = write_cross_site(tmp_path, scores)
    assert [p.name for p in paths] == [CROSS_SITE_FILE, CROSS_SITE_SCORES_FILE, CROSS_SITE_PNG]

    matrix = read_cross_site(tmp_path)
    assert matrix.shape == (len(models), len(sites))
    assert list(matrix.index) == models  # the caller's order: global first
    assert list(matrix.columns) == ["site-1", "site-2", "site-10"]  # sites as a person numbers them
    for model in models:
        for site in sites:
            assert matrix.loc[model, site] == pytest.approx(scores[model][site]["mean_dice"], abs=1e-6)


def test_long_csv_holds_every_metric_of_every_pair(tmp_path):
    scores = _scores(np.random.default_rng(1), ["site-1", "site-2"], [GLOBAL_MODEL, "site-1 local"])
    write_cross_site(tmp_path, scores)
    long = pd.read_csv(tmp_path / CROSS_SITE_SCORES_FILE)
    assert len(long) == 2 * 2 * len(CROSS_SITE_METRICS)
    for row in long.itertuples():
        assert row.value == pytest.approx(scores[row.model][row.site][row.metric], abs=1e-6)


def test_a_pair_that_was_not_scored_is_an_empty_cell_not_a_number(tmp_path):
    # Sharing off: a personal model is scored only by its own site.
    scores = {
        GLOBAL_MODEL: {"site-1": {"mean_dice": 0.5}, "site-2": {"mean_dice": 0.25}},
        personal_model("site-1"): {"site-1": {"mean_dice": 0.75}},
    }
    write_cross_site(tmp_path, scores)
    matrix = read_cross_site(tmp_path)
    assert math.isnan(matrix.loc[personal_model("site-1"), "site-2"])
    assert matrix.loc[personal_model("site-1"), "site-1"] == pytest.approx(0.75)
    assert matrix_cells(scores) == {GLOBAL_MODEL: {"site-1": 0.5, "site-2": 0.25}, "site-1 personal": {"site-1": 0.75}}


def test_heatmap_is_a_png_whose_size_grows_with_the_matrix(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    write_cross_site(small, _scores(np.random.default_rng(2), ["site-1", "site-2"], [GLOBAL_MODEL]))
    many_sites = [f"site-{k}" for k in range(1, 9)]
    write_cross_site(large, _scores(np.random.default_rng(3), many_sites, [GLOBAL_MODEL, *many_sites]))
    for folder in (small, large):
        assert (folder / CROSS_SITE_PNG).read_bytes()[:8] == PNG_MAGIC
    small_size = Image.open(small / CROSS_SITE_PNG).size
    large_size = Image.open(large / CROSS_SITE_PNG).size
    assert large_size[0] > small_size[0] and large_size[1] > small_size[1]


def test_writing_nothing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no cross-site scores"):
        write_cross_site(tmp_path, {GLOBAL_MODEL: {}})
    assert not (tmp_path / CROSS_SITE_FILE).exists()


def test_a_site_reports_the_three_region_dice_and_their_mean():
    means = {"dice_et": 0.2, "dice_tc": 0.4, "dice_wt": 0.9, "hd95_et": 12.0, "nsd_wt": 0.5}
    reported = cross_site_metrics(means)
    assert set(reported) == set(CROSS_SITE_METRICS)  # nothing else leaves the site
    assert reported["mean_dice"] == pytest.approx(mean_dice(means))
    assert cross_site_metrics({}) == {}


def test_cross_site_keys_and_files_are_documented():
    from tests import REPO

    keys = (REPO / "docs" / "configuration.md").read_text()
    assert "`cross-site-eval`" in keys and "`cross-site-share-personal`" in keys
    guide = (REPO / "docs" / "evaluation.md").read_text()
    assert all(name in guide for name in (CROSS_SITE_FILE, CROSS_SITE_SCORES_FILE, CROSS_SITE_PNG))
