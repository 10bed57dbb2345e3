"""A site's data manifest: the files it trains and validates on, their sizes and SHA-256.

The manifest's own hash (SHA-256 of its canonical JSON) goes with every reply, so the run
folder can name exactly the data each site used; the site can recompute it at any time
(``fedtumor audit manifest``) and prove that its files are unchanged. File names are
relative to the folder that holds the subjects, so moving the cohort keeps the hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from data_loaders.layouts import SubjectFiles

CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def subject_paths(subjects: Iterable[SubjectFiles]) -> list[Path]:
    paths = []
    for files in subjects:
        paths.extend(files.images.values())
        if files.label is not None:
            paths.append(files.label)
    return paths


def build_manifest(paths: Iterable[Path], root: Path) -> list[dict]:
    """One entry per file, sorted by name: ``{"file", "bytes", "sha256"}``; names relative to ``root``."""
    entries = []
    for path in sorted({Path(p) for p in paths}):
        entries.append(
            {"file": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        )
    return entries


def manifest_sha256(entries: list[dict]) -> str:
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def site_manifest(subjects: Iterable[SubjectFiles]) -> tuple[list[dict], str]:
    """(manifest, its hash) of a site's subjects; names relative to the folder holding them."""
    subjects = list(subjects)
    if not subjects:
        return [], manifest_sha256([])
    root = Path(os.path.commonpath([files.folder.parent for files in subjects]))
    entries = build_manifest(subject_paths(subjects), root)
    return entries, manifest_sha256(entries)
