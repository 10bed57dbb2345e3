"""The run folder: one self-contained directory per federated run.

The ServerApp writes, as the run goes, into ``<output-dir>/<run-name>/``:

- ``config.json``: the resolved run config, library versions, git revision and a UTC time stamp;
- ``metrics.csv``: long format ``round,scope,split,metric,value``, one row per number, appended
  and flushed as each round finishes so a crashed run still leaves its history behind;
- ``overlay_case.npz``: one test case (image, reference, prediction) for the overlay plot;
- ``summary.json``: strategy, rounds, wall time, final and best metrics;
- the models (the server saves them itself at :meth:`RunWriter.model_path`) and the PNG plots;
- with ``tracking = "mlflow"``, the same params and metrics in MLflow (fedtumor/run/tracking.py).

Scopes are ``"global"`` or a site id such as ``"site-3"``; splits are ``"train"``, ``"val"``
and ``"test"``. Round 0 is the initial global model.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedtumor.core.errors import DataError
from fedtumor.core.ordering import natural_key
from fedtumor.run.files import CONFIG_FILE, FINAL_MODEL_FILE, METRICS_FILE, OVERLAY_FILE, SUMMARY_FILE
from fedtumor.run.folder import files_of_a_run
from fedtumor.run.tracking import NoTracker, Tracker

METRICS_COLUMNS: tuple[str, ...] = ("round", "scope", "split", "metric", "value")
SPLITS: tuple[str, ...] = ("train", "val", "test")
GLOBAL_SCOPE = "global"

# Distributions whose versions decide whether a result can be reproduced.
VERSIONED_PACKAGES: tuple[str, ...] = (
    "fedtumor",
    "flwr",
    "torch",
    "monai",
    "torchio",
    "numpy",
    "scipy",
    "pandas",
    "nibabel",
    "nilearn",
    "matplotlib",
    "ray",
)


# ----------------------------------------------------------------------------- provenance


def library_versions(packages: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Python, platform and installed distribution versions; a missing distribution gives None."""
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(directory: Path, *args: str) -> str | None:
    """Output of one git command in ``directory``, or None if git is absent or fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_revision(search_dirs: Iterable[Path] | None = None) -> tuple[str, bool | None]:
    """(commit sha, dirty) of the first directory that is inside a git work tree with a commit.

    By default looks next to the installed ``fedtumor`` package first (the checkout the code
    came from), then in the working directory. Never raises: ``("unknown", None)`` when no
    revision can be found (no git, no repository, no commit yet).
    """
    if search_dirs is None:
        package_parent = Path(__file__).resolve().parents[2]
        search_dirs = [package_parent, Path.cwd()]
    for directory in search_dirs:
        sha = _git(Path(directory), "rev-parse", "HEAD")
        if sha and re.fullmatch(r"[0-9a-f]{40,64}", sha):
            status = _git(Path(directory), "status", "--porcelain")
            return sha, (None if status is None else bool(status))
    return "unknown", None


# ----------------------------------------------------------------------------- JSON


def to_jsonable(value: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, paths, tuples, sets and tensors.

    Non-finite floats become None so the file stays strict JSON that any parser reads.
    """
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, np.ndarray) or hasattr(value, "tolist"):  # numpy arrays, torch tensors
        return to_jsonable(value.tolist())
    return str(value)


def _write_json_atomically(path: Path, data: Any) -> None:
    """Write via a temporary file so a reader (or a crash) never sees half a file."""
    text = json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


# ----------------------------------------------------------------------------- writer


class RunWriter:
    """Writes one run folder. Create one per run, in the ServerApp.

    ``run_dir`` is created with its parents. A folder that already holds a run's files
    (config.json, metrics.csv or summary.json) is refused unless ``exist_ok=True``, in which
    case new metric rows are appended after the old ones: results are never overwritten
    by accident.

    ``tracker`` (off by default) gets the config, every metric row and the end of the run as
    they are written; it is started once the folder is known to be free.
    """

    def __init__(self, run_dir: Path | str, exist_ok: bool = False, tracker: Tracker | None = None):
        self.run_dir = Path(run_dir)
        if not exist_ok:
            taken = files_of_a_run(self.run_dir)
            if taken:
                raise FileExistsError(
                    f"{self.run_dir} already holds a run ({', '.join(taken)}); choose another run name or output folder"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tracker: Tracker = tracker if tracker is not None else NoTracker()
        self.tracker.start()

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    def model_path(self, name: str = FINAL_MODEL_FILE) -> Path:
        """Where to save a model file; a bare file name keeps the folder self-contained."""
        if not name or Path(name).name != name:
            raise ValueError(f"model file name must be a bare file name, got {name!r}")
        return self.run_dir / name

    def write_config(self, resolved_config: Mapping[str, Any]) -> Path:
        """config.json: the run config plus the versions and revision that produced the run."""
        revision, dirty = git_revision()
        record = {
            "config": dict(resolved_config),
            "versions": library_versions(),
            "git_revision": revision,
            "git_dirty": dirty,
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        path = self.run_dir / CONFIG_FILE
        _write_json_atomically(path, record)
        self.tracker.log_params(record["config"])
        return path

    def add_metrics(self, round: int, scope: str, split: str, metrics: Mapping[str, Any]) -> None:  # noqa: A002
        """Append one row per metric to metrics.csv and flush, so the file is always current."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not scope:
            raise ValueError("scope must be 'global' or a site id, got an empty string")
        rows, numbers = [], {}
        for name, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"metric {name!r} for {scope}/{split} round {round} is not a number: {value!r}"
                ) from None
            rows.append((int(round), scope, split, str(name), repr(number)))
            numbers[str(name)] = number
        if not rows:
            return
        path = self.metrics_path
        write_header = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            if write_header:
                writer.writerow(METRICS_COLUMNS)
            writer.writerows(rows)
            handle.flush()
        self.tracker.log_metrics(int(round), scope, split, numbers)

    def drop_rounds_after(self, last_round: int) -> None:
        """Keep metrics.csv rows up to ``last_round`` (resume: the rounds after it are run again).

        Rewritten under a temporary name and renamed, so a crash leaves the old file whole.
        """
        path = self.metrics_path
        if not path.exists():
            return
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        kept = [row for row in rows[1:] if len(row) == len(METRICS_COLUMNS) and int(row[0]) <= last_round]
        temporary = path.with_name(f".{path.name}.tmp")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(METRICS_COLUMNS)
            writer.writerows(kept)
        os.replace(temporary, path)

    def write_overlay_case(
        self,
        subject_id: str,
        image: np.ndarray,
        reference: np.ndarray,
        prediction: np.ndarray,
        round: int,  # noqa: A002
        spacing: tuple[float, float, float] | None = None,
    ) -> Path:
        """overlay_case.npz: one case for the overlay plot (image (X,Y,Z), BraTS 2021 labels)."""
        image = np.asarray(image)
        reference = np.asarray(reference)
        prediction = np.asarray(prediction)
        if image.ndim != 3 or image.shape != reference.shape or image.shape != prediction.shape:
            raise ValueError(
                f"overlay case {subject_id}: image, reference and prediction must be the same 3D shape, got "
                f"{image.shape}, {reference.shape}, {prediction.shape}"
            )
        path = self.run_dir / OVERLAY_FILE
        temporary = path.with_name(f".{path.stem}.tmp.npz")
        np.savez_compressed(
            temporary,
            image=image.astype(np.float32),
            reference=reference.astype(np.uint8),
            prediction=prediction.astype(np.uint8),
            subject_id=np.array(str(subject_id)),
            round=np.array(int(round)),
            spacing=np.array(spacing if spacing is not None else (1.0, 1.0, 1.0), dtype=np.float64),
        )
        os.replace(temporary, path)
        return path

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """summary.json, pretty-printed, numpy types converted; it ends the tracked run."""
        path = self.run_dir / SUMMARY_FILE
        _write_json_atomically(path, summary)
        self.tracker.finish(failed=summary.get("status") == "failed")
        return path

    def write_json(self, name: str, data: Any) -> Path:
        """Any other JSON record the run keeps (e.g. data-manifest hashes, an audit log)."""
        if not name.endswith(".json") or Path(name).name != name:
            raise ValueError(f"JSON file name must be a bare name ending in .json, got {name!r}")
        path = self.run_dir / name
        _write_json_atomically(path, data)
        return path


# ----------------------------------------------------------------------------- readers


def _metrics_csv(run_dir: Path | str) -> Path:
    path = Path(run_dir)
    return path if path.name == METRICS_FILE and path.is_file() else path / METRICS_FILE


def read_metrics(run_dir: Path | str) -> pd.DataFrame:
    """metrics.csv as a DataFrame (round int, value float); DataError naming the path if unusable."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise DataError("no such run folder", path=run_dir)
    path = _metrics_csv(run_dir)
    if not path.is_file():
        raise DataError("no metrics.csv: not a run folder, or the run stopped before round 0", path=path)
    try:
        frame = pd.read_csv(
            path,
            dtype={"scope": str, "split": str, "metric": str},
            keep_default_na=False,
            na_values={"value": ["nan", "NaN", ""]},
        )
    except pd.errors.EmptyDataError:
        raise DataError("metrics.csv is empty", path=path) from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        raise DataError(
            f"cannot read metrics.csv ({type(exc).__name__}: {str(exc).splitlines()[0]})", path=path
        ) from None
    if tuple(frame.columns) != METRICS_COLUMNS:
        raise DataError(
            f"metrics.csv header is {','.join(map(str, frame.columns))}, expected {','.join(METRICS_COLUMNS)}",
            path=path,
        )
    rounds = pd.to_numeric(frame["round"], errors="coerce")
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = rounds.isna() | (values.isna() & frame["value"].notna())
    if bad.any():
        line = int(bad.to_numpy().argmax()) + 2  # 1-based, after the header
        raise DataError(f"metrics.csv line {line} has a non-numeric round or value", path=path)
    frame["round"] = rounds.astype("int64")
    frame["value"] = values.astype("float64")
    return frame


def read_summary(run_dir: Path | str) -> dict[str, Any] | None:
    """summary.json as a dict, or None when the run has not written one (yet)."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read summary.json ({type(exc).__name__})", path=path) from None


def metric_table(metrics: pd.DataFrame, scope: str, split: str) -> pd.DataFrame:
    """Wide view of one scope and split: index round, one column per metric (last value wins)."""
    rows = metrics[(metrics["scope"] == scope) & (metrics["split"] == split)]
    if rows.empty:
        return pd.DataFrame(index=pd.Index([], name="round", dtype="int64"))
    table = rows.pivot_table(index="round", columns="metric", values="value", aggfunc="last", dropna=False)
    table.columns.name = None
    return table.sort_index()


def site_scopes(metrics: pd.DataFrame) -> list[str]:
    """Site ids present in the metrics, in natural order."""
    scopes = {scope for scope in metrics["scope"].unique() if scope != GLOBAL_SCOPE}
    return sorted(scopes, key=natural_key)
