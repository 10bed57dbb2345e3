"""The sites and held-out test set of a baseline: exactly what a simulation of the same config sees."""

from __future__ import annotations

from pathlib import Path

import torchio as tio

from data_loaders.partitions import partition_ids, read_partitions
from data_loaders.site import PARTITIONS_FILE, SiteData, cohort_root, ensure_synthetic_cohort, load_heldout, load_site
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError


def number_of_sites(config: RunConfig, sites: int | None) -> int:
    """Sites of the cohort: the partition CSV's count with ``data-dir``, else ``synth-sites`` or ``sites``.

    ``sites`` plays the part of ``num-supernodes`` in a simulation.
    """
    if config.data_dir:
        csv_path = (
            Path(config.partitions).expanduser() if config.partitions else Path(config.data_dir) / PARTITIONS_FILE
        )
        count = len(partition_ids(read_partitions(csv_path)))
        if sites is not None and sites != count:
            raise ConfigError(f"--sites {sites} but {csv_path} defines {count} partitions")
        return count
    if config.synth_sites:
        return config.synth_sites
    if sites is None:
        raise ConfigError("give --sites (the simulation's num-supernodes) or run-config key 'synth-sites'")
    return sites


def load_sites(config: RunConfig, n_sites: int) -> list[SiteData]:
    """Every site's preprocessed train/val subjects, as simulated node ``partition-id`` i would load them."""
    ensure_synthetic_cohort(config, n_sites)  # no-op with data-dir
    return [load_site(config, {"partition-id": index, "num-partitions": n_sites}) for index in range(n_sites)]


def load_test_subjects(config: RunConfig, n_sites: int) -> list[tio.Subject]:
    """The server's held-out test subjects; a baseline without them cannot be compared, so it refuses."""
    subjects = load_heldout(config, n_sites)
    if not subjects:
        root = cohort_root(config, n_sites)
        raise ConfigError(f"no held-out test subjects: set run-config key 'heldout' or add {root / 'heldout.csv'}")
    return subjects
