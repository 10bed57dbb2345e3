"""Lay a cohort out the way a deployment holds it: one folder per hospital, one for the test set.

A simulation reads one cohort folder and picks a site's subjects through the partition CSV;
a deployed SuperNode only sees its own folder (``data-dir`` in its node config), and the
coordinating centre only the held-out test subjects. The folders hold symbolic links to the
cohort's subject folders, so nothing is copied.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from data_loaders.partitions import partition_ids, read_partitions, read_subject_list, subjects_of_partition
from data_loaders.site import HELDOUT_FILE, PARTITIONS_FILE
from fedtumor.core.errors import DataError


def _link_subjects(cohort: Path, subject_ids: list[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=False)
    for subject_id in subject_ids:
        source = cohort / subject_id
        if not source.is_dir():
            raise DataError(f"subject folder not found under {cohort}", subject=subject_id, path=source)
        (folder / subject_id).symlink_to(source.resolve(), target_is_directory=True)


def export_site_folders(cohort: Path, out_dir: Path, partitions: Path | None = None) -> dict[str, Path]:
    """``out_dir/site-<partition>/`` per partition of the cohort's CSV; returns site id -> folder."""
    cohort = Path(cohort)
    table = read_partitions(Path(partitions) if partitions else cohort / PARTITIONS_FILE)
    folders = {}
    for partition in partition_ids(table):
        site_id = f"site-{partition}"
        folders[site_id] = Path(out_dir) / site_id
        _link_subjects(cohort, subjects_of_partition(table, partition), folders[site_id])
    return folders


def export_heldout_folder(cohort: Path, out_dir: Path) -> Path:
    """``out_dir`` with the held-out subjects and their ``heldout.csv``: the server's ``data-dir``."""
    cohort, out_dir = Path(cohort), Path(out_dir)
    csv_path = cohort / HELDOUT_FILE
    _link_subjects(cohort, read_subject_list(csv_path), out_dir)
    shutil.copyfile(csv_path, out_dir / HELDOUT_FILE)
    return out_dir
