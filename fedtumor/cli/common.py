"""What every `fedtumor` command shares: the typer app, the consoles, exit codes and `fail`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="fedtumor",
    help="Federated brain-tumour segmentation: data, metrics, reports and predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
error_console = Console(stderr=True)

EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print one line naming what is wrong and exit; never a traceback."""
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
