#!/usr/bin/env python
"""fedtumor's BraTS metrics versus the official ``brats-evaluation`` package, case by case.

Builds the comparison cases (fedtumor.bench.metric_cases: the real BraTS case and its
perturbations when ../shared/realdata is there, synthetic 1 mm cases, and the inputs the
official package gets wrong), runs the official evaluator in its own virtual environment
(fedtumor.bench.official_eval; built on first use, about 40 s) and prints one row per case
and region: each metric as fedtumor / official, ``*`` where they differ.

    python scripts/official_eval.py                       # table on the console
    python scripts/official_eval.py --markdown table.md   # also as a Markdown table (docs/metrics.md)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fedtumor.bench.metric_cases import build_cases  # noqa: E402
from fedtumor.bench.official_eval import COMPARED, agrees, compare_case, reference_python, run_official  # noqa: E402

console = Console()


def _cell(rows: dict, metric: str) -> str:
    row = rows[metric]
    ours, theirs = row["fedtumor"], row["official"]
    text = f"{ours:.4g} / {theirs:.4g}" if "lesion_t" not in metric and "lesion_f" not in metric else None
    if text is None:
        text = f"{ours:.0f} / {theirs:.0f}" if theirs == theirs else f"{ours:.0f} / nan"
    return text if agrees(row) else f"{text} *"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    parser.add_argument("--cases", type=Path, default=None, help="Folder for the case files (default: a temp folder).")
    parser.add_argument("--markdown", type=Path, default=None, help="Also write the table as Markdown here.")
    args = parser.parse_args()

    started = time.perf_counter()
    python = reference_python()
    console.print(f"reference venv ready in {time.perf_counter() - started:.1f} s: {python.parent.parent}")
    with tempfile.TemporaryDirectory() as tmp:
        pairs = build_cases(args.realdata, args.cases or Path(tmp))
        started = time.perf_counter()
        official = run_official(pairs, python)
        console.print(f"official evaluation of {len(pairs)} cases: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        grouped: dict[tuple[str, str], dict] = {}
        for pair in pairs:
            for row in compare_case(pair, official[pair.subject]):
                grouped.setdefault((row["case"], row["region"]), {})[row["metric"]] = row
        console.print(f"fedtumor on the same cases: {time.perf_counter() - started:.1f} s")

    metrics = [name for name, _ in COMPARED]
    table = Table(title="fedtumor / official (brats-evaluation 0.0.10, config_gli); * = differ")
    for column in ("case", "region", *metrics):
        table.add_column(column, justify="left" if column in ("case", "region") else "right")
    lines = ["| case | region | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
    for (case, region), rows in grouped.items():
        cells = [_cell(rows, metric) for metric in metrics]
        table.add_row(case, region, *cells)
        lines.append(f"| {case} | {region} | " + " | ".join(cells) + " |")
    if console.width >= 170:
        console.print(table)
    else:  # too narrow for the grid: the same cells as Markdown rows
        console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
        console.print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
