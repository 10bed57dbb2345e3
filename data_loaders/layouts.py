"""Find the scans of each subject in a BraTS 2021 / FeTS 2022 or BraTS 2023 folder layout.

BraTS 2021 / FeTS 2022: ``<ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii.gz`` (FeTS writes ``_t1gd`` for ``_t1ce``).
BraTS 2023:             ``<ID>/<ID>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (ET is label 3, not 4).
``.nii`` is accepted too. This module only finds files; ``validation`` opens them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedtumor.core.errors import DataError
from fedtumor.core.ordering import natural_key

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")  # canonical names, in channel order
LAYOUTS: tuple[str, ...] = ("brats2021", "brats2023")

# File suffix -> canonical modality ("seg" is the label), per layout. FeTS 2022 counts as brats2021.
SUFFIXES: dict[str, dict[str, str]] = {
    "brats2021": {"t1": "t1", "t1ce": "t1ce", "t1gd": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"},
    "brats2023": {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "seg": "seg"},
}
# The separator between ID and suffix each layout writes; used only to name expected files.
SEPARATORS = {"brats2021": "_", "brats2023": "-"}

_NIFTI_EXTENSIONS = (".nii.gz", ".nii")
_ALL_SUFFIXES = sorted({s for table in SUFFIXES.values() for s in table}, key=len, reverse=True)
# Optional "<prefix>[_-]" then a known suffix; anchored at the end so "_t1" never matches "_t1ce".
_SCAN_NAME = re.compile(
    r"^(?:(?P<prefix>.+)[_-])?(?P<suffix>" + "|".join(_ALL_SUFFIXES) + r")\.nii(?:\.gz)?$", re.IGNORECASE
)


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject, keyed by canonical modality."""

    subject_id: str
    folder: Path
    images: dict[str, Path]  # canonical modality -> file (only those found)
    label: Path | None
    layout: str  # "brats2021" (incl. FeTS 2022 with _t1gd) or "brats2023"
    missing: tuple[str, ...]  # canonical modalities not found
    # NIfTI files in the folder that name no modality of this layout ("_fla", or "_t1c" in a 2021 folder)
    unplaced: tuple[Path, ...] = ()

    def expected_name(self, modality: str) -> str:
        """The file name this layout expects for ``modality`` (canonical name or "seg")."""
        return expected_name(self.subject_id, modality, self.layout)


def expected_name(subject_id: str, modality: str, layout: str) -> str:
    """``<ID>_t1ce.nii.gz`` for brats2021, ``<ID>-t1c.nii.gz`` for brats2023."""
    if layout not in SUFFIXES:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    suffix = next(s for s, canonical in SUFFIXES[layout].items() if canonical == modality)
    return f"{subject_id}{SEPARATORS[layout]}{suffix}.nii.gz"


def expected_names(subject_id: str, layout: str) -> list[str]:
    """Every file name ``layout`` expects in a subject folder: the four modalities, then the segmentation."""
    return [expected_name(subject_id, modality, layout) for modality in (*MODALITIES, "seg")]


def _is_hidden(path: Path) -> bool:
    # Dotfiles, and macOS zip debris ("__MACOSX/", "._BraTS_001_t1.nii.gz"), are never scans.
    return path.name.startswith(".") or path.name == "__MACOSX"


def _is_nifti(path: Path) -> bool:
    return path.is_file() and not _is_hidden(path) and path.name.lower().endswith(_NIFTI_EXTENSIONS)


def _scan_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_nifti(p))


def _recognised_scans(folder: Path) -> list[tuple[Path, str, str | None]]:
    """(file, lower-case suffix, prefix) for each NIfTI file whose name ends in a known suffix."""
    found = []
    for path in _scan_files(folder):
        match = _SCAN_NAME.match(path.name)
        if match:
            found.append((path, match["suffix"].lower(), match["prefix"]))
    return found


def _guess_layout(suffixes: list[str]) -> str:
    # The layout whose own suffixes ("seg" is shared) name more files; ties go to brats2021.
    votes = {layout: sum(1 for s in suffixes if s in table and s != "seg") for layout, table in SUFFIXES.items()}
    return "brats2023" if votes["brats2023"] > votes["brats2021"] else "brats2021"


def _preference(path: Path, prefix: str | None, subject_id: str, suffix: str) -> tuple:
    # When several files claim one modality: the exact "<ID><sep>" name first, then .nii.gz over .nii,
    # then _t1ce over FeTS's _t1gd; the file name breaks remaining ties so the choice is deterministic.
    return (prefix != subject_id, not path.name.lower().endswith(".nii.gz"), suffix == "t1gd", path.name)


def find_subject(folder: Path) -> SubjectFiles:
    """The scans of the subject stored in ``folder`` (its name is the subject id)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("subject folder does not exist or is not a folder", path=folder)
    subject_id = folder.name
    scans = _recognised_scans(folder)
    if not scans and not _scan_files(folder):
        raise DataError("no NIfTI files (.nii.gz or .nii) in subject folder", subject=subject_id, path=folder)

    layout = _guess_layout([suffix for _, suffix, _ in scans])
    table = SUFFIXES[layout]
    chosen: dict[str, tuple[tuple, Path]] = {}
    placed: set[Path] = set()
    for path, suffix, prefix in scans:
        canonical = table.get(suffix)
        if canonical is None:  # a file of the other layout: listed as unplaced, its modality missing
            continue
        placed.add(path)
        rank = _preference(path, prefix, subject_id, suffix)
        if canonical not in chosen or rank < chosen[canonical][0]:
            chosen[canonical] = (rank, path)

    images = {m: chosen[m][1] for m in MODALITIES if m in chosen}
    label = chosen["seg"][1] if "seg" in chosen else None
    missing = tuple(m for m in MODALITIES if m not in images)
    unplaced = tuple(path for path in _scan_files(folder) if path not in placed)
    return SubjectFiles(
        subject_id=subject_id,
        folder=folder,
        images=images,
        label=label,
        layout=layout,
        missing=missing,
        unplaced=unplaced,
    )


def discover_subjects(root: Path) -> list[SubjectFiles]:
    """Every subject under ``root``, sorted by id (numbers by value).

    ``root`` is either one subject folder (it holds scans itself) or a cohort folder whose
    sub-folders holding NIfTI files are subjects. Other entries (partitioning.csv, cohort.json,
    montage.png, hidden folders, folders without NIfTI files) are ignored. A sub-folder with
    NIfTI files that match no known name is still returned, with every modality missing, so
    that a misnamed scan is reported rather than silently skipped.
    """
    root = Path(root)
    if not root.exists():
        raise DataError("data folder does not exist", path=root)
    if not root.is_dir():
        raise DataError("data folder is not a folder", path=root)

    if _recognised_scans(root):
        return [find_subject(root)]
    subjects = [
        find_subject(child)
        for child in root.iterdir()
        if child.is_dir() and not _is_hidden(child) and _scan_files(child)
    ]
    if not subjects:
        raise DataError(
            "no subjects found: expected sub-folders with <ID>_t1.nii.gz ... (BraTS 2021 / FeTS) "
            "or <ID>-t1n.nii.gz ... (BraTS 2023)",
            path=root,
        )
    return sorted(subjects, key=lambda s: natural_key(s.subject_id))
