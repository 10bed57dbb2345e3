"""Which subjects a site trains and validates on, and the server's held-out test set.

A simulated site is one partition of a cohort (its ``partition-id`` from Flower's node
config picks a ``Partition_ID`` of the partition CSV); a deployed site is a folder given as
``data-dir`` in the SuperNode's node config. Both end as a :class:`SiteData`.

What a deployed site's checks report names files relative to its ``data-dir``
(``S1/S1_flair.nii.gz``), never by the hospital's own paths: it reaches the server's logs.
Its warnings (a case that does not look BraTS-preprocessed, a file that names no modality) go
to ``on_warning`` (the ClientApp logs them before its first round) and never fail the node.

A site without segmentations (inference or evaluation only) sets ``labels=false`` in its
node config: its check reads images only, and it answers train and evaluate with a DataError
saying it has no labels.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torchio as tio

from data_loaders.layouts import SubjectFiles, discover_subjects
from data_loaders.manifest import site_manifest
from data_loaders.partitions import partition_for_index, read_partitions, read_subject_list, subjects_of_partition
from data_loaders.pipelines import PreprocessingSettings, preprocess_subject
from data_loaders.validation import check_data_dir, relative_to_folder
from fedtumor.core.config import RunConfig, fedtumor_home
from fedtumor.core.errors import ConfigError, DataError

PARTITIONS_FILE = "partitioning.csv"
HELDOUT_FILE = "heldout.csv"
LABELS_KEY = "labels"  # node-config flag: false for a site without segmentations
NO_LABELS_MESSAGE = (
    f"this site has no labels (node-config {LABELS_KEY}=false), so it can neither train nor evaluate; "
    "its images were checked"
)


@dataclass
class SiteData:
    site_id: str
    train: list[tio.Subject]
    val: list[tio.Subject]
    manifest_sha256: str = ""  # data_loaders/manifest.py: the site's files, sizes and content hashes


def preprocessing_settings(config: RunConfig) -> PreprocessingSettings:
    return PreprocessingSettings(spacing_mm=config.spacing_mm, min_shape=config.patch_size)


def preprocessed_cache_dir() -> Path:
    return fedtumor_home() / "cache" / "preprocessed"


def synthetic_cohort_dir(config: RunConfig, n_sites: int) -> Path:
    """The cached synthetic cohort a config implies; server and clients derive the same path."""
    from data_loaders.synthetic import GENERATOR_VERSION

    name = (
        f"synth-v{GENERATOR_VERSION}-sites{n_sites}-subj{config.synth_subjects}-test{config.synth_test_subjects}"
        f"-seed{config.synth_seed}-shape{config.synth_shape}"
    )
    if config.synth_geometry != "cube":  # cube cohorts keep the folder name they always had
        name += f"-geometry{config.synth_geometry}"
    return fedtumor_home() / "cohorts" / name


def cohort_root(config: RunConfig, n_sites: int) -> Path:
    """The data folder of a simulation: ``data-dir``, or the synthetic cohort it implies."""
    if config.data_dir:
        return Path(config.data_dir).expanduser()
    sites = config.synth_sites or n_sites
    return synthetic_cohort_dir(config, sites)


def ensure_synthetic_cohort(config: RunConfig, n_sites: int) -> Path:
    """Generate (or reuse) the synthetic cohort when no ``data-dir`` is configured."""
    root = cohort_root(config, n_sites)
    if config.data_dir:
        return root
    from data_loaders.synthetic import generate_cohort

    generate_cohort(
        root,
        n_sites=config.synth_sites or n_sites,
        n_subjects=config.synth_subjects,
        seed=config.synth_seed,
        shape=config.synth_shape,
        n_test=config.synth_test_subjects,
        geometry=config.synth_geometry,
    )
    return root


def _files_by_id(root: Path) -> dict[str, SubjectFiles]:
    return {files.subject_id: files for files in discover_subjects(root)}


def _select(files_by_id: dict[str, SubjectFiles], subject_ids: list[str], source: Path) -> list[SubjectFiles]:
    missing = [s for s in subject_ids if s not in files_by_id]
    if missing:
        raise DataError(f"subject folder not found under {source.parent}", subject=missing[0], path=source)
    return [files_by_id[s] for s in subject_ids]


def split_train_val(
    subject_ids: list[str], val_fraction: float, seed: int, site_id: str
) -> tuple[list[str], list[str]]:
    """Deterministic per-site split; a site with one subject validates on it too."""
    ids = sorted(subject_ids)
    if len(ids) < 2:
        return ids, list(ids)
    rng = np.random.default_rng([seed, zlib.crc32(site_id.encode())])
    order = rng.permutation(len(ids))
    n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


def site_has_labels(node_config: Mapping[str, Any]) -> bool:
    """The node config's ``labels`` flag (default true); ConfigError naming the key for any other value.

    Example:
        >>> site_has_labels({"data-dir": "/data/site-a", "labels": False})
        False
    """
    value = node_config.get(LABELS_KEY, True)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"node-config key '{LABELS_KEY}' must be true or false, not {value!r}")


def check_site_folder(root: Path, labels: bool = True) -> list[str]:
    """Run every `fedtumor check-data` check on a deployed site's folder before it trains.

    Returns the warnings, one line each, files named relative to ``root``; raises a DataError
    naming the first problem's file relative to ``root`` (the node's ``data-dir``).
    ``labels=False`` checks images only, as ``fedtumor check-data --no-labels``.

    Example:
        >>> for line in check_site_folder(Path("/data/site-a")):  # doctest: +SKIP
        ...     print(line)
    """
    root = Path(root)
    try:
        report = check_data_dir(root, labels=labels)  # raises DataError itself for a missing or empty folder
    except DataError as exc:
        raise DataError(relative_to_folder(str(exc), root)) from None
    if report.problems:
        count = len(report.problems)
        more = f" (1 of {count} problems; run `fedtumor check-data <data-dir>` for all)" if count > 1 else ""
        raise DataError(f"{report.problems[0].relative_to(root)}{more}")
    return [f"warning: {warning.relative_to(root)}" for warning in report.warnings]


def deployed_site_id(node_config: Mapping[str, Any]) -> str:
    """A deployed node's site id: ``site-id`` from its node config, else the name of its ``data-dir``."""
    return str(node_config.get("site-id") or Path(str(node_config["data-dir"])).expanduser().name)


def node_site_id(config: RunConfig | None, node_config: Mapping[str, Any]) -> str | None:
    """The site id a node trains as, told without reading its data; None when its config cannot tell.

    For the error reply of a site whose data failed: the same id a sound reply would carry.
    """
    if "data-dir" in node_config:
        return deployed_site_id(node_config)
    if config is None or "partition-id" not in node_config:
        return None
    try:
        num_partitions = int(node_config["num-partitions"])
        table = read_partitions(_partitions_csv(config, num_partitions))
        return f"site-{partition_for_index(table, int(node_config['partition-id']), num_partitions)}"
    except (DataError, ConfigError, KeyError, ValueError, TypeError):
        return None


def _partitions_csv(config: RunConfig, num_partitions: int) -> Path:
    return (
        Path(config.partitions).expanduser()
        if config.partitions
        else cohort_root(config, num_partitions) / PARTITIONS_FILE
    )


def resolve_site(
    config: RunConfig, node_config: Mapping[str, Any], on_warning: Callable[[str], None] | None = None
) -> tuple[str, list[SubjectFiles], list[SubjectFiles]]:
    """(site id, train files, val files) for this node, simulated or deployed.

    A deployed node's folder is checked first; each warning goes to ``on_warning`` as
    ``site <site-id>: warning: ...``.
    """
    if "data-dir" in node_config:
        root = Path(str(node_config["data-dir"])).expanduser()
        site_id = deployed_site_id(node_config)
        for line in check_site_folder(root, labels=site_has_labels(node_config)):
            if on_warning is not None:
                on_warning(f"site {site_id}: {line}")
        files_by_id = _files_by_id(root)
        train_ids, val_ids = split_train_val(list(files_by_id), config.val_fraction, config.seed, site_id)
        return site_id, [files_by_id[s] for s in train_ids], [files_by_id[s] for s in val_ids]
    if "partition-id" not in node_config:
        raise DataError("node config has neither 'data-dir' (deployment) nor 'partition-id' (simulation)")
    num_partitions = int(node_config["num-partitions"])
    root = cohort_root(config, num_partitions)
    csv_path = _partitions_csv(config, num_partitions)
    table = read_partitions(csv_path)
    partition = partition_for_index(table, int(node_config["partition-id"]), num_partitions)
    site_id = f"site-{partition}"
    subject_ids = subjects_of_partition(table, partition)
    files_by_id = _files_by_id(root)
    splits = table.loc[table["partition_id"] == partition].set_index("subject_id")["split"]
    if splits.notna().all():
        train_ids = sorted(s for s in subject_ids if splits[s] == "train")
        val_ids = sorted(s for s in subject_ids if splits[s] == "val") or train_ids
    else:
        train_ids, val_ids = split_train_val(subject_ids, config.val_fraction, config.seed, site_id)
    return site_id, _select(files_by_id, train_ids, csv_path), _select(files_by_id, val_ids, csv_path)


def load_site(
    config: RunConfig, node_config: Mapping[str, Any], on_warning: Callable[[str], None] | None = None
) -> SiteData:
    """Resolve and preprocess (cached) this node's subjects; a site without labels raises DataError."""
    site_id, train_files, val_files = resolve_site(config, node_config, on_warning)
    if not site_has_labels(node_config):
        raise DataError(NO_LABELS_MESSAGE)
    if not train_files:
        raise DataError(f"site {site_id} has no training subjects")
    settings = preprocessing_settings(config)
    cache = preprocessed_cache_dir()
    return SiteData(
        site_id=site_id,
        train=[preprocess_subject(f, settings, cache) for f in train_files],
        val=[preprocess_subject(f, settings, cache) for f in val_files],
        manifest_sha256=site_manifest([*train_files, *val_files])[1],
    )


def heldout_files(config: RunConfig, n_sites: int) -> list[SubjectFiles]:
    """The server's held-out test subjects, or [] when there is no held-out list."""
    root = cohort_root(config, n_sites)
    csv_path = Path(config.heldout).expanduser() if config.heldout else root / HELDOUT_FILE
    if not config.heldout and not csv_path.exists():
        return []
    return _select(_files_by_id(root), read_subject_list(csv_path), csv_path)


def load_heldout(config: RunConfig, n_sites: int) -> list[tio.Subject]:
    settings = preprocessing_settings(config)
    return [preprocess_subject(f, settings, preprocessed_cache_dir()) for f in heldout_files(config, n_sites)]
