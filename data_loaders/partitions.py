"""FeTS partition CSVs (which subject belongs to which site) and held-out subject lists.

Columns are found by name, never position: FeTS 2022 writes ``Partition_ID,Subject_ID``,
FeTS 2021 the reverse, and either may add ``TrainOrVal``. Names match case-insensitively.
Every failure is a one-line :class:`DataError` naming the CSV.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from fedtumor.core.errors import DataError
from fedtumor.core.ordering import natural_key

PARTITION_COLUMN = "Partition_ID"
SUBJECT_COLUMN = "Subject_ID"
SPLIT_COLUMN = "TrainOrVal"

_SPLIT_VALUES = {
    "train": "train",
    "training": "train",
    "t": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "v": "val",
}
_SOURCE_ATTR = "source"  # df.attrs key holding the CSV path, so later errors can name it


def _read_table(csv_path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read ``csv_path`` as strings, with the ``required`` columns renamed to their canonical spelling."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError("CSV file does not exist" if not csv_path.exists() else "CSV path is not a file", path=csv_path)
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read CSV: {exc.strerror or exc}", path=csv_path) from None
    # Binary garbage (a NIfTI, a zip) can still parse as one odd column; refuse it by name instead.
    if b"\x00" in raw[:65536]:
        raise DataError("not a text CSV (binary content)", path=csv_path)
    try:
        text = raw.decode("utf-8-sig")  # the BOM Excel writes would otherwise glue onto the first name
    except UnicodeDecodeError:
        raise DataError("not a UTF-8 text CSV", path=csv_path) from None
    if not text.strip():
        raise DataError("CSV file is empty", path=csv_path)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot parse CSV: {reason}", path=csv_path) from None

    by_lower = {str(c).strip().lower(): c for c in df.columns}
    absent = [name for name in required if name.lower() not in by_lower]
    if absent:
        found = ", ".join(str(c).strip() for c in df.columns) or "none"
        raise DataError(f"missing required column {', '.join(absent)} (columns found: {found})", path=csv_path)
    renames = {by_lower[name.lower()]: name for name in (*required, SPLIT_COLUMN) if name.lower() in by_lower}
    df = df.rename(columns=renames)
    df = df.apply(lambda col: col.str.strip())
    df.index = df.index + 1  # 1-based data-row numbers, so errors can point at a row
    # Trailing ",," rows from spreadsheets carry no subject.
    return df[(df[list(required)] != "").any(axis=1)]


def _require_filled(df: pd.DataFrame, column: str, csv_path: Path) -> None:
    blank = df.index[df[column] == ""].tolist()
    if blank:
        rows = ", ".join(str(i) for i in blank[:5])
        raise DataError(f"empty {column} in data row {rows}", path=csv_path)


def _reject_duplicates(subjects: pd.Series, csv_path: Path) -> None:
    duplicated = sorted(set(subjects[subjects.duplicated()]), key=natural_key)
    if duplicated:
        shown = ", ".join(duplicated[:5]) + (f" (+{len(duplicated) - 5} more)" if len(duplicated) > 5 else "")
        raise DataError(f"duplicate subject ids: {shown}", path=csv_path)


def _normalise_split(values: pd.Series, csv_path: Path) -> list[str | None]:
    splits = []
    for row, value in values.items():
        if value == "":
            splits.append(None)
            continue
        split = _SPLIT_VALUES.get(value.lower())
        if split is None:
            raise DataError(f"{SPLIT_COLUMN} in data row {row} is {value!r}; expected train or val", path=csv_path)
        splits.append(split)
    return splits


def read_partitions(csv_path: Path) -> pd.DataFrame:
    """A FeTS partition CSV as columns ``partition_id`` (str), ``subject_id`` (str), ``split``.

    ``split`` is "train", "val" or None (no ``TrainOrVal`` column, or an empty cell).
    Raises DataError for an unreadable or empty CSV, a missing column, blank ids, duplicate
    subjects or an unknown ``TrainOrVal`` value.
    """
    csv_path = Path(csv_path)
    table = _read_table(csv_path, (PARTITION_COLUMN, SUBJECT_COLUMN))
    if table.empty:
        raise DataError("CSV lists no subjects", path=csv_path)
    for column in (PARTITION_COLUMN, SUBJECT_COLUMN):
        _require_filled(table, column, csv_path)
    _reject_duplicates(table[SUBJECT_COLUMN], csv_path)
    split = _normalise_split(table[SPLIT_COLUMN], csv_path) if SPLIT_COLUMN in table else [None] * len(table)

    df = pd.DataFrame(
        {
            "partition_id": table[PARTITION_COLUMN].astype(str).tolist(),
            "subject_id": table[SUBJECT_COLUMN].astype(str).tolist(),
            "split": pd.Series(split, dtype=object),  # object keeps None as None (not NaN)
        }
    )
    df.attrs[_SOURCE_ATTR] = str(csv_path)
    return df


def _source(df: pd.DataFrame) -> str | None:
    return df.attrs.get(_SOURCE_ATTR)


def partition_ids(df: pd.DataFrame) -> list[str]:
    """The distinct partition ids, sorted naturally: "1", "2", ..., "10"; "site2" before "site10"."""
    return sorted(df["partition_id"].unique().tolist(), key=natural_key)


def subjects_of_partition(df: pd.DataFrame, partition_id: str | int, split: str | None = None) -> list[str]:
    """Subject ids of one partition in CSV order, optionally only its "train" or "val" ones.

    Raises DataError for an unknown partition id, or when nothing is left to train on.
    """
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be None, 'train' or 'val', not {split!r}")
    wanted = str(partition_id).strip()
    rows = df[df["partition_id"] == wanted]
    if rows.empty:
        known = ", ".join(partition_ids(df))
        raise DataError(f"unknown partition {wanted!r} (known: {known})", path=_source(df))
    if split is not None:
        rows = rows[rows["split"] == split]
    subjects = rows["subject_id"].tolist()
    if not subjects:
        raise DataError(f"partition {wanted!r} has no {split} subjects", path=_source(df))
    return subjects


def partition_for_index(df: pd.DataFrame, index: int, num_partitions: int) -> str:
    """Map a simulation's ``partition-id`` (0..N-1) to the CSV's Partition_ID, in natural order.

    Raises DataError when the simulation's node count is not the CSV's partition count (each
    simulated site must be exactly one CSV partition), or ``index`` is out of range.
    """
    ids = partition_ids(df)
    if num_partitions != len(ids):
        raise DataError(
            f"simulation has {num_partitions} partitions but the CSV defines {len(ids)}; "
            f"set num-supernodes to {len(ids)}",
            path=_source(df),
        )
    if not 0 <= index < len(ids):
        raise DataError(f"partition index {index} is out of range 0..{len(ids) - 1}", path=_source(df))
    return ids[index]


def read_subject_list(csv_path: Path) -> list[str]:
    """Subject ids from a CSV with a ``Subject_ID`` column (e.g. a held-out test list), in file order.

    A list with a header and no rows is valid and gives an empty list; blank ids and duplicates
    raise DataError.
    """
    csv_path = Path(csv_path)
    table = _read_table(csv_path, (SUBJECT_COLUMN,))
    _require_filled(table, SUBJECT_COLUMN, csv_path)
    _reject_duplicates(table[SUBJECT_COLUMN], csv_path)
    return table[SUBJECT_COLUMN].astype(str).tolist()
