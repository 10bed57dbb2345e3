"""Session fixtures: each synthetic cohort the suite trains on is generated once per test session.

Generating a subject takes about two seconds, so the end-to-end runs share a few small cohorts
instead of each drawing its own, across pytest-xdist's workers too. A test that damages files
(a truncated upload) asks for a private copy with :func:`copy_cohort`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from data_loaders.synthetic import generate_cohort
from tests import REAL_CASE_ID, REALDATA

TWO_SITES = {"n_sites": 2, "n_subjects": 6, "seed": 5, "shape": 64, "n_test": 2}
THREE_SITES = {"n_sites": 3, "n_subjects": 9, "seed": 3, "shape": 64, "n_test": 2}


def _cohort(tmp_path_factory: pytest.TempPathFactory, settings: dict) -> Path:
    """Generated once per run of the suite: pytest-xdist's workers share it through their common folder."""
    name = "cohort-" + "-".join(f"{key}{value}" for key, value in settings.items())
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # popen-gw0, gw1 ... sit side by side
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker writes it, the others wait and reuse it
        return generate_cohort(shared / name, progress=False, **settings).root  # reused when already there


@pytest.fixture(scope="session")
def two_site_cohort(tmp_path_factory) -> Path:
    """2 sites, 6 training subjects, 2 held-out test subjects (read-only: copy it to change files)."""
    return _cohort(tmp_path_factory, TWO_SITES)


@pytest.fixture(scope="session")
def three_site_cohort(tmp_path_factory) -> Path:
    """3 sites, 9 training subjects, 2 held-out test subjects (read-only: copy it to change files)."""
    return _cohort(tmp_path_factory, THREE_SITES)


def copy_cohort(cohort: Path, destination: Path) -> Path:
    """A private copy of a session cohort, for a test that damages or removes files."""
    return Path(shutil.copytree(cohort, destination))


def _real_case(layout: str) -> Path:
    folder = REALDATA / layout / REAL_CASE_ID
    if not folder.is_dir():
        pytest.skip(f"real BraTS case not here: {folder} is absent (it lives beside the checkout, never in it)")
    return folder


@pytest.fixture(scope="session")
def real_case_2023() -> Path:
    """The real BraTS 2023 case in its own layout (-t1n, -t1c, -t2w, -t2f, -seg; ET = 3); read-only."""
    return _real_case("brats2023")


@pytest.fixture(scope="session")
def real_case_2021() -> Path:
    """The same case renamed to the BraTS 2021 layout (_t1, _t1ce, _t2, _flair, _seg; ET = 4); read-only."""
    return _real_case("brats2021")


# BraTS geometry (240x240x155, 1 mm, LPS): the fewest subjects a cohort may hold (3 on its one
# site + 1 held out), about 8 s each; the e2e test regroups them into two sites.
BRATS_GEOMETRY = {"n_sites": 1, "n_subjects": 3, "seed": 11, "n_test": 1, "geometry": "brats"}


@pytest.fixture(scope="session")
def brats_geometry_cohort(tmp_path_factory) -> Path:
    """4 subjects on the BraTS grid (3 site subjects, 1 held out); read-only: copy it to change files."""
    return _cohort(tmp_path_factory, BRATS_GEOMETRY)
