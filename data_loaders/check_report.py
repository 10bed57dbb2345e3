"""Print a :class:`~data_loaders.validation.DataReport` as ``fedtumor check-data`` shows it.

A table of subjects, then every problem (red), warning (yellow) and note as one full line that
can be searched for and copied, then the summary: ``N subjects, N problems, N warnings``.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from data_loaders.validation import DataReport, SubjectCheck


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _dims(values: tuple | None, fmt: str = "{}") -> str:
    return "x".join(fmt.format(v) for v in values) if values else "-"


def _short_name(path: Path | None, subject_id: str) -> str:
    """``t2.nii.gz`` for ``<ID>_t2.nii.gz``: the subject is already in the row."""
    if path is None:
        return "-"
    name = path.name
    return name[len(subject_id) :].lstrip("_-") or name if name.startswith(subject_id) else name


def _status(check: SubjectCheck) -> str:
    subject_id = check.subject.subject_id
    if not check.ok:
        return "\n".join(
            f"[red]{escape(_short_name(p.file, subject_id))}: {escape(p.message)}[/]" for p in check.problems
        )
    if check.warnings:
        return f"[yellow]ok, {_plural(len(check.warnings), 'warning')}[/]"
    return "[green]ok[/]"


def summary_line(report: DataReport) -> str:
    """``2 subjects, 1 problem, 3 warnings``: the last line check-data prints."""
    counts = [
        _plural(len(report.subjects), "subject"),
        _plural(len(report.problems), "problem"),
        _plural(len(report.warnings), "warning"),
    ]
    return ", ".join(counts)


def print_report(report: DataReport, console: Console) -> None:
    """A table of subjects (layout, shape, spacing, labels, status), then problems, warnings, a summary.

    Example:
        >>> from data_loaders.validation import check_data_dir
        >>> print_report(check_data_dir("/data/site-a"), Console())  # doctest: +SKIP
    """
    rows = [
        (
            escape(check.subject.subject_id),
            check.subject.layout,
            _dims(check.shape),
            _dims(check.spacing, "{:g}"),
            ",".join(str(v) for v in check.labels) or "-",
            _status(check),
        )
        for check in report.subjects
    ]

    table = Table(title=escape(f"check-data {report.root}"), title_justify="left")
    headers = ("subject", "layout", "shape", "spacing", "labels")
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)]
    for header, width in zip(headers, widths):
        # Never squeezed: ids must stay whole to be found, and the other columns are short.
        table.add_column(header, no_wrap=True, min_width=width)
    # One line per problem, cut to the width left over (3 per column for borders and padding);
    # the full lines follow the table.
    status_width = max(console.width - sum(widths) - 3 * (len(headers) + 1) - 1, 12)
    table.add_column("status", no_wrap=True, overflow="ellipsis", max_width=status_width)
    for row in rows:
        table.add_row(*row)
    console.print(table)

    # The full one-line form of each finding, unwrapped, so it can be searched for and copied.
    for problem in report.problems:
        console.print(f"[red]problem:[/] {escape(str(problem))}", soft_wrap=True, highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(str(warning))}", soft_wrap=True, highlight=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True, highlight=False)
    colour = "red" if report.problems else "yellow" if report.warnings else "green"
    console.print(f"[bold {colour}]{summary_line(report)}[/]", highlight=False)
