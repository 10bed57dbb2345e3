"""Generate a synthetic cohort, or reuse the identical one already on disk.

Generation is cached by its parameters: ``cohort.json``, written last, doubles as the cache key,
and a partial marker lets a rerun replace an interrupted generation. A file lock makes concurrent
callers (the ServerApp and simulated clients, say) generate a cohort once. A folder holding
anything else is never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from data_loaders.synthetic.parameters import GENERATOR_VERSION, MODALITIES, CohortParameters, validated_parameters
from data_loaders.synthetic.sites import draw_site_profile, plan_subjects
from data_loaders.synthetic.subject import write_subject
from data_loaders.synthetic.writing import (
    COHORT_FILE,
    HELDOUT_FILE,
    LOCK_FILE,
    MONTAGE_FILE,
    PARTIAL_FILE,
    PARTITION_FILE,
    read_json,
    write_json,
    write_montage,
    write_partitions,
)


@dataclass(frozen=True)
class CohortInfo:
    """Where a cohort lies and what it holds."""

    root: Path  # absolute
    n_sites: int
    n_subjects: int  # site (training-side) subjects over all sites
    n_test: int  # held-out test subjects
    montage: Path  # absolute path of montage.png
    cached: bool  # True when an existing identical cohort was reused


def generate_cohort(
    out_dir: Path,
    n_sites: int,
    n_subjects: int,
    seed: int,
    shape: int = 64,
    n_test: int | None = None,
    progress: bool = True,
    geometry: str = "cube",
) -> CohortInfo:
    """Write (or reuse) a synthetic cohort in ``out_dir``: the BraTS 2021 layout plus FeTS partition CSVs.

    Args:
        out_dir: Folder to write into; missing, empty, or holding this very cohort.
        n_sites: Number of sites (partitions), run-config key ``synth-sites``.
        n_subjects: Site subjects over all sites, at least 3 per site (``synth-subjects``).
        seed: Non-negative seed; the same parameters give a byte-identical cohort (``synth-seed``).
        shape: Edge length of the cubic volumes, at least 32 (``synth-shape``); ignored by ``brats``.
        n_test: Held-out test subjects (``synth-test-subjects``); ``None`` for about 20%.
        progress: Show a progress bar while generating.
        geometry: ``"cube"`` (``shape``^3 voxels over 192 mm, RAS) or ``"brats"`` (the BraTS grid:
            240x240x155 voxels of 1 mm, LPS, brain placed as in SRI24; about 10 s a subject).

    Raises:
        ConfigError: a parameter out of range; the one-line message names its run-config key
            and ``fedtumor synth`` option (the error is also a ``ValueError``).
        ValueError: ``out_dir`` holds anything other than a cohort with exactly these parameters.
    """
    params = validated_parameters(n_sites, n_subjects, seed, shape, n_test, geometry)
    root = Path(out_dir).expanduser().resolve()
    info = CohortInfo(
        root=root,
        n_sites=params.n_sites,
        n_subjects=params.n_subjects,
        n_test=params.n_test,
        montage=root / MONTAGE_FILE,
        cached=True,
    )
    if _reusable_cohort(root, params):
        return info
    root.mkdir(parents=True, exist_ok=True)
    with _cohort_lock(root):
        # Another process (a simulated client, say) may have finished it while we waited.
        if _reusable_cohort(root, params):
            return info
        _write_cohort(root, params, progress)
    return CohortInfo(**{**asdict(info), "cached": False})


def _write_cohort(root: Path, params: CohortParameters, progress: bool) -> None:
    write_json(root / PARTIAL_FILE, _cache_key(params))
    profiles = [draw_site_profile(params, site) for site in range(1, params.n_sites + 1)]
    plans = plan_subjects(params)
    records = []
    with _progress_bar(len(plans), enabled=progress) as advance:
        for plan in plans:
            records.append(write_subject(root, plan, profiles[plan.profile_site - 1], params))
            advance()
    write_partitions(root, plans)
    write_montage(root, plans, records, params.n_sites)
    # Written last: its presence means the cohort is complete.
    write_json(root / COHORT_FILE, {**_cache_key(params), "sites": [asdict(p) for p in profiles], "subjects": records})
    (root / PARTIAL_FILE).unlink()


@contextmanager
def _cohort_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cohort folder, so concurrent callers generate it once."""
    import fcntl

    with open(root / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cache_key(params: CohortParameters) -> dict:
    return {"generator": "fedtumor.synthetic", "generator_version": GENERATOR_VERSION, "parameters": params.as_dict()}


def _same_cohort(stored: dict, params: CohortParameters) -> bool:
    key = _cache_key(params)
    return all(stored.get(name) == key[name] for name in key)


def _reusable_cohort(root: Path, params: CohortParameters) -> bool:
    """True when ``root`` already holds this exact cohort, complete; raise when it holds anything else.

    Returns False (generate) for a missing or empty folder, or for our own unfinished or
    damaged generation with the same parameters.
    """
    if root.exists() and not root.is_dir():
        raise ValueError(f"cohort folder {root} exists and is not a folder")
    if not root.exists() or not any(entry.name != LOCK_FILE for entry in root.iterdir()):
        return False
    for marker in (COHORT_FILE, PARTIAL_FILE):
        if (root / marker).exists():
            stored = read_json(root / marker)
            if not _same_cohort(stored, params):
                found = _describe(stored.get("parameters"), stored.get("generator_version"))
                wanted = _describe(params.as_dict(), GENERATOR_VERSION)
                raise ValueError(
                    f"cohort folder {root} holds a synthetic cohort with other parameters ({found}) "
                    f"than requested ({wanted}); choose another --out or delete that folder"
                )
            return marker == COHORT_FILE and _cohort_complete(root, stored)
    raise ValueError(
        f"cohort folder {root} is not empty and holds no synthetic cohort ({COHORT_FILE}); "
        "choose another --out or an empty folder"
    )


def _describe(parameters: object, version: object) -> str:
    if not isinstance(parameters, dict):
        return "unreadable"
    names = {"n_sites": "sites", "n_subjects": "subjects", "n_test": "test", "seed": "seed", "shape": "shape"}
    shown = [f"{label}={parameters.get(key, '?')}" for key, label in names.items()]
    geometry = [f"geometry={parameters['geometry']}"] if "geometry" in parameters else []
    return ", ".join([*shown, *geometry, f"generator {version or '?'}"])


def _cohort_complete(root: Path, stored: dict) -> bool:
    expected = [root / PARTITION_FILE, root / HELDOUT_FILE, root / MONTAGE_FILE]
    for subject in stored.get("subjects", []):
        sid = subject["subject_id"]
        expected += [root / sid / f"{sid}_{suffix}.nii.gz" for suffix in (*MODALITIES, "seg")]
    return bool(stored.get("subjects")) and all(path.is_file() for path in expected)


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator:
    """Yield an ``advance()`` callable; a rich progress bar when enabled."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("synthetic cohort"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("subjects", total=total)
        yield lambda: bar.advance(task)
