"""Check a site's data before it joins a federation: every problem is one line naming subject and file.

Per subject: missing modality or label, unreadable / corrupt / truncated NIfTI, not 3D, shape or
affine mismatch against the first modality, NaN or Inf voxels, label values outside the
layout's convention ({0,1,2,4} for BraTS 2021 / FeTS, {0,1,2,3} for BraTS 2023) or not integer.

With a partition CSV: the CSV must be readable (else DataError, as for a missing folder).
For every partition that has at least one subject on disk, its other subjects must be on disk
too (a problem each). Partitions with no subject here, and subjects here that the CSV does not
list (held-out test cases, say), are notes, not problems: a site folder holds only its own
partition of a federation-wide CSV.

Warnings (:class:`DataWarning`) are what still runs but should not: a case that does not look
like BraTS preprocessing (``onboarding``), and files that name no modality (listed with the names
expected). They fail ``check-data`` only with ``--strict``. ``labels=False`` checks a site without
segmentations: images only, a segmentation present is not opened.

``fedtumor check-data`` (run by the hospital itself) names files by their full path; what a
deployed site sends to the server names them relative to its ``data-dir``
(:meth:`Problem.relative_to`, :func:`relative_to_folder`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

import nibabel as nib
import numpy as np

from data_loaders import onboarding
from data_loaders.layouts import MODALITIES, SubjectFiles, discover_subjects, expected_name, expected_names
from data_loaders.partitions import partition_ids, read_partitions
from fedtumor.core.errors import DataError
from fedtumor.core.ordering import natural_key
from fedtumor.core.regions import allowed_labels

AFFINE_TOLERANCE = 1e-3  # mm; resampling tools round affines differently below this
_MAX_LISTED = 8  # values or ids listed in one message before "+N more"


@dataclass
class _Finding:
    subject: str
    file: Path | None
    message: str

    def __str__(self) -> str:
        # Same shape as DataError's message, so a log reads the same whichever one printed it.
        # Collapsing whitespace keeps it one line even when an exception's text had newlines.
        return " ".join(str(DataError(self.message, subject=self.subject, path=self.file)).split())

    def relative_to(self, root: Path) -> Self:
        """The same finding with its file, and any path in its message, named relative to ``root``."""
        file = self.file
        if file is not None:
            file = file.relative_to(root) if file.is_relative_to(root) else Path(file.name)
        return replace(self, file=file, message=relative_to_folder(self.message, root))


@dataclass
class Problem(_Finding):
    """One thing wrong with the data; ``str()`` is one line naming the subject and the file."""


@dataclass
class DataWarning(_Finding):
    """Data that runs but should not be trusted as it is (not BraTS-preprocessed, a file ignored).

    ``str()`` is one line naming the subject and the file, as for :class:`Problem`.
    """


def relative_to_folder(text: str, root: Path) -> str:
    """``text`` with the folder ``root`` left out of every path in it: ``<root>/S1/x.nii.gz`` -> ``S1/x.nii.gz``.

    ``root`` itself becomes ``data-dir``. The absolute path and the one with links resolved are
    both left out (a library may report either).
    """
    root = Path(root)
    forms = {str(root.absolute())}
    try:
        forms.add(str(root.resolve()))
    except (OSError, RuntimeError):  # a symlink loop: the absolute form is still left out
        pass
    for form in sorted(forms - {root.anchor}, key=len, reverse=True):
        whole = r"(?<![\w.~/-])" + re.escape(form)  # a whole path: not "/x/data/site", nor "/data/site2" below
        text = re.sub(whole + r"/(?=[^/\s])", "", text)
        text = re.sub(whole + r"(?![\w.~-])/?", "data-dir", text)
    return text


@dataclass
class SubjectCheck:
    """What was found in one subject folder."""

    subject: SubjectFiles
    shape: tuple | None  # 3D grid of the reference image (first readable modality)
    spacing: tuple | None  # voxel size in mm of the reference image
    labels: tuple[int, ...]  # label values present in the segmentation (empty when unread)
    problems: list[Problem]
    warnings: list[DataWarning] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class DataReport:
    """Result of :func:`check_data_dir`; ``problems`` holds every problem, subject- and CSV-level."""

    root: Path
    subjects: list[SubjectCheck]
    problems: list[Problem]
    warnings: list[DataWarning] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not wrong (see module docstring)
    partitions: Path | None = None


def _listing(values: list, limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_volume(path: Path) -> tuple[nib.Nifti1Image | None, np.ndarray | None, str | None]:
    """(image, voxels, None) or (None, None, why it could not be read)."""
    try:
        image = nib.load(str(path))
        # Loading reads only the header: force the voxels to catch truncated or corrupt data.
        data = np.asanyarray(image.dataobj)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - EOFError, zlib.error, BadGzipFile, ImageFileError, ...
        return None, None, f"cannot read NIfTI ({_one_line(exc)})"
    return image, data, None


def _spatial_shape(data: np.ndarray) -> tuple[int, ...] | None:
    """The 3D grid, allowing a trailing singleton axis (X, Y, Z, 1) as some tools write; else None."""
    shape = tuple(int(n) for n in data.shape)
    if len(shape) == 3:
        return shape
    if len(shape) > 3 and all(n == 1 for n in shape[3:]):
        return shape[:3]
    return None


def _label_problems(values: np.ndarray, layout: str) -> list[str]:
    """Why the distinct label ``values`` break the layout's convention (empty when they do not)."""
    messages = []
    finite = values[np.isfinite(values)]  # NaN/Inf are reported by the voxel check
    whole = finite == np.round(finite)
    if not whole.all():
        messages.append(f"non-integer label values {_listing(finite[~whole].tolist())}")
    allowed = allowed_labels(layout)
    outside = sorted(int(v) for v in finite[whole].tolist() if int(v) not in allowed)
    if outside:
        convention = "BraTS 2023" if layout == "brats2023" else "BraTS 2021 / FeTS"
        messages.append(f"label values {_listing(outside)} outside {sorted(allowed)} ({convention} convention)")
    return messages


def _expected_listing(files: SubjectFiles) -> list[str]:
    names = expected_names(files.subject_id, files.layout)
    if files.layout == "brats2021":  # FeTS 2022 names the contrast-enhanced T1 "_t1gd"; either is accepted
        names[1] += f" (or {files.subject_id}_t1gd.nii.gz)"
    return names


def check_subject(
    files: SubjectFiles, require_label: bool = True, labels: bool = True, onboarding_checks: bool = True
) -> SubjectCheck:
    """Open every file of one subject and return all problems and warnings found (never raises for bad data).

    ``require_label=False``: a missing segmentation is fine, one present is still checked.
    ``labels=False``: images only; the segmentation is neither required nor opened.
    ``onboarding_checks=False``: no BraTS-preprocessing warnings (a loader that only needs the problems).

    Example:
        >>> from data_loaders.layouts import find_subject
        >>> check = check_subject(find_subject("/data/site-a/BraTS2021_00001"))  # doctest: +SKIP
        >>> [str(p) for p in check.problems], [str(w) for w in check.warnings]  # doctest: +SKIP
    """
    subject = files.subject_id
    problems: list[Problem] = []
    warnings: list[DataWarning] = []
    unplaced = ", ".join(path.name for path in files.unplaced)

    def problem(path: Path | None, message: str) -> None:
        problems.append(Problem(subject, path, message))

    def warn(path: Path, message: str | None) -> None:
        if message is not None and onboarding_checks:
            warnings.append(DataWarning(subject, path, message))

    for modality in files.missing:
        expected = expected_name(subject, modality, files.layout)
        # FeTS 2022 names the contrast-enhanced T1 "_t1gd"; either name is accepted.
        alternative = f" or {subject}_t1gd.nii.gz" if modality == "t1ce" and files.layout == "brats2021" else ""
        ignored = f"; files here that name no modality: {unplaced}" if unplaced else ""
        problem(files.folder / expected, f"missing {modality} image (expected {expected}{alternative}{ignored})")
    if files.label is None and require_label and labels:
        expected = expected_name(subject, "seg", files.layout)
        problem(files.folder / expected, f"missing segmentation (expected {expected})")
    for path in files.unplaced:
        warn(path, onboarding.unplaced_file_warning(files.layout, _expected_listing(files)))

    to_read = [(m, files.images[m]) for m in MODALITIES if m in files.images]
    if files.label is not None and labels:
        to_read.append(("seg", files.label))

    reference: tuple[Path, tuple[int, ...], np.ndarray, tuple] | None = None  # path, shape, affine, spacing
    grid_checked = False
    label_values: tuple[int, ...] = ()
    for modality, path in to_read:
        image, data, error = _read_volume(path)
        if error:
            problem(path, error)
            continue
        if data.dtype.kind not in "biuf":  # complex or RGB voxels are neither intensities nor labels
            problem(path, f"unsupported voxel type {data.dtype}")
            continue
        shape = _spatial_shape(data)
        if shape is None:
            problem(path, f"not a 3D volume: shape {tuple(data.shape)}")
            continue
        spacing = tuple(round(float(z), 4) for z in image.header.get_zooms()[:3])
        if reference is None:
            reference = (path, shape, image.affine, spacing)
        else:
            ref_path, ref_shape, ref_affine, _ = reference
            if shape != ref_shape:
                problem(path, f"shape {shape} differs from {ref_shape} of {ref_path.name}")
            elif not np.allclose(image.affine, ref_affine, atol=AFFINE_TOLERANCE):
                worst = float(np.max(np.abs(image.affine - ref_affine)))
                problem(path, f"affine differs from {ref_path.name} (largest difference {worst:.4g})")

        if data.dtype.kind == "f":  # integer voxels cannot be NaN or Inf
            counts = {"NaN": int(np.isnan(data).sum()), "Inf": int(np.isinf(data).sum())}
            if any(counts.values()):
                problem(path, ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) + " voxels")
        if modality == "seg":
            values = np.unique(data)
            for message in _label_problems(values, files.layout):
                problem(path, message)
            label_values = tuple(int(v) for v in values.tolist() if np.isfinite(v) and v == round(v))
            continue
        if not onboarding_checks or not all(z > 0 for z in spacing):  # a zero voxel side: TorchIO reports it
            continue
        if not grid_checked:  # the subject's grid and voxel size, once, on its first readable image
            grid_checked = True
            warn(path, onboarding.grid_warning(shape))
            warn(path, onboarding.spacing_warning(spacing))
        warn(path, onboarding.skull_strip_warning(data, spacing))

    shape, spacing = (reference[1], reference[3]) if reference else (None, None)
    return SubjectCheck(
        subject=files, shape=shape, spacing=spacing, labels=label_values, problems=problems, warnings=warnings
    )


def validate_or_raise(files: SubjectFiles, require_label: bool = True) -> None:
    """Raise DataError with the first problem of this subject (for loaders); return when clean."""
    check = check_subject(files, require_label=require_label, onboarding_checks=False)
    if check.problems:
        first = check.problems[0]
        raise DataError(first.message, subject=first.subject, path=first.file)


def _partition_findings(subjects: list[SubjectFiles], csv_path: Path) -> tuple[list[Problem], list[str]]:
    """Problems (CSV subjects missing from partitions present here) and notes (the rest)."""
    table = read_partitions(csv_path)
    on_disk = {s.subject_id for s in subjects}
    listed = set(table["subject_id"])
    problems: list[Problem] = []
    notes: list[str] = []

    present = set(table.loc[table["subject_id"].isin(on_disk), "partition_id"])
    for pid in partition_ids(table):
        if pid not in present:
            continue
        wanted = table.loc[table["partition_id"] == pid, "subject_id"]
        for subject_id in sorted(set(wanted) - on_disk, key=natural_key):
            problems.append(
                Problem(subject_id, csv_path, f"listed in partition {pid} but no subject folder {subject_id} on disk")
            )

    absent = [pid for pid in partition_ids(table) if pid not in present]
    if not present:
        # No overlap at all means the wrong CSV or the wrong folder: one problem, not one per subject.
        problems.append(Problem("", csv_path, f"none of the {len(on_disk)} subjects on disk is listed in this CSV"))
    elif absent:
        notes.append(f"partitions with no subject here (expected for a single site): {_listing(absent)}")
    unlisted = sorted(on_disk - listed, key=natural_key)
    if unlisted and present:
        notes.append(f"{len(unlisted)} subject(s) on disk not in {csv_path.name}: {_listing(unlisted)}")
    return problems, notes


def check_data_dir(
    root: Path, partitions: Path | None = None, require_label: bool = True, labels: bool = True
) -> DataReport:
    """Check every subject under ``root`` (and against a partition CSV when given).

    Raises DataError when ``root`` does not exist or holds no subjects, or the CSV is unreadable;
    everything else wrong with the data is collected in the report. ``labels=False`` checks
    images only (a site without segmentations; see :func:`check_subject`).

    Example:
        >>> report = check_data_dir("/data/site-a", labels=False)  # doctest: +SKIP
        >>> len(report.problems), len(report.warnings)  # doctest: +SKIP
        (0, 0)
    """
    root = Path(root)
    subjects = discover_subjects(root)  # raises DataError for a missing or empty folder
    checks = [check_subject(files, require_label=require_label, labels=labels) for files in subjects]
    problems = [p for check in checks for p in check.problems]
    warnings = [w for check in checks for w in check.warnings]
    notes: list[str] = []
    if partitions is not None:
        csv_problems, notes = _partition_findings(subjects, Path(partitions))
        problems.extend(csv_problems)
    return DataReport(
        root=root,
        subjects=checks,
        problems=problems,
        warnings=warnings,
        notes=notes,
        partitions=Path(partitions) if partitions is not None else None,
    )
