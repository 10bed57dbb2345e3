"""The cohort's files: subject NIfTIs in the BraTS 2021 layout, the FeTS partition CSVs, montage, JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_loaders.synthetic.sites import SubjectPlan

COHORT_FILE = "cohort.json"
PARTIAL_FILE = ".cohort.partial.json"  # marks a generation in progress, so a rerun may overwrite it
LOCK_FILE = ".cohort.lock"
PARTITION_FILE = "partitioning.csv"
HELDOUT_FILE = "heldout.csv"
MONTAGE_FILE = "montage.png"


def save_subject(
    folder: Path, subject_id: str, images: dict[str, np.ndarray], seg: np.ndarray, affine: np.ndarray
) -> None:
    """Write ``<folder>/<subject_id>_<name>.nii.gz`` for every image and the segmentation."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (*images.items(), ("seg", seg)):
        image = nib.Nifti1Image(data, affine)
        image.header.set_xyzt_units("mm")
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        nib.save(image, folder / f"{subject_id}_{name}.nii.gz")


def write_partitions(root: Path, plans: Sequence[SubjectPlan]) -> None:
    """The FeTS partition CSV of the site subjects and the list of held-out test subjects."""
    site_rows = sorted((p.site, p.index, p.subject_id) for p in plans if p.site is not None)
    lines = ["Partition_ID,Subject_ID", *(f"{site},{sid}" for site, _, sid in site_rows)]
    (root / PARTITION_FILE).write_text("\n".join(lines) + "\n")
    test_ids = sorted((p.index, p.subject_id) for p in plans if p.site is None)
    (root / HELDOUT_FILE).write_text("\n".join(["Subject_ID", *(sid for _, sid in test_ids)]) + "\n")


def write_montage(root: Path, plans: Sequence[SubjectPlan], records: Sequence[dict], n_sites: int) -> None:
    """One row per site in ``montage.png``: the site's subject with the median tumour volume."""
    from data_loaders.montage import MontageRow
    from data_loaders.montage import write_montage as write_montage_png

    rows = []
    for site in range(1, n_sites + 1):
        # The median, not the largest: typical, not an extreme.
        members = sorted((r["wt_ml"], p.index, p.subject_id) for p, r in zip(plans, records) if p.site == site)
        wt_ml, _, subject_id = members[(len(members) - 1) // 2]
        title = f"site {site} · {subject_id} · WT {wt_ml:.0f} mL"
        rows.append(MontageRow(title=title, subject_dir=root / subject_id))
    write_montage_png(rows, root / MONTAGE_FILE)


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def read_json(path: Path) -> dict:
    """The JSON object in ``path``, or ``{}`` when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
