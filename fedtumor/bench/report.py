"""How every benchmark reports: a rich table on the terminal, a JSON record with the machine's load."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedtumor.run.writer import git_revision, library_versions, to_jsonable


def machine() -> dict[str, Any]:
    """What the numbers depend on: cores, memory, load (the machine is shared), versions, revision."""
    try:
        total_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        total_kib = 0
    revision, dirty = git_revision()
    return {
        "cpu_count": os.cpu_count(),
        "memory_gib": round(total_kib / 2**20, 1),
        "platform": platform.platform(),
        "loadavg": list(os.getloadavg()),
        "versions": library_versions(("torch", "flwr", "ray", "monai", "torchio")),
        "git_revision": revision,
        "git_dirty": dirty,
    }


def print_table(console: Console, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    console.print(table)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def write_record(path: Path, name: str, settings: dict, results: Any, machine_before: dict) -> Path:
    """``path`` (JSON): the command, settings, results and the machine's state before and after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": settings,
        "machine": machine_before,
        "loadavg_after": list(os.getloadavg()),
        "results": results,
    }
    path.write_text(json.dumps(to_jsonable(record), indent=2) + "\n")
    return path
