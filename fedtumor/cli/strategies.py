"""`fedtumor strategies`: list the installed plugins, run one through the conformance kit."""

from __future__ import annotations

import typer
from rich.markup import escape

from fedtumor.cli.common import EXIT_PROBLEMS, app, console, error_console, fail
from fedtumor.core.errors import ConfigError

strategies_app = typer.Typer(
    help="Aggregation strategies: list the installed plugins, check one.", no_args_is_help=True
)
app.add_typer(strategies_app, name="strategies")


@strategies_app.command("list")
def strategies_list() -> None:
    """Installed strategies (entry-point group fedtumor.strategies) and their parameters."""
    from rich.table import Table

    from fedtumor.federation.registry import load_registry

    registry = load_registry()
    table = Table(title="fedtumor strategies")
    for column in ("name", "description", "parameters (strategy-config defaults)", "client hooks"):
        table.add_column(column)
    for name, plugin in sorted(registry.plugins.items()):
        params = " ".join(f"{key}={parameter.default!r}" for key, parameter in plugin.parameters.items()) or "-"
        table.add_row(name, plugin.description, params, "yes" if plugin.client_hooks else "-")
    console.print(table)
    for name, reason in sorted(registry.broken.items()):
        error_console.print(f"[bold red]failed to load:[/] {escape(name)}: {escape(reason)}", highlight=False)


@strategies_app.command("check")
def strategies_check(name: str = typer.Argument(..., help="A strategy that `strategies list` shows.")) -> None:
    """Run a strategy through the conformance kit (a short in-process federation): exit 0 when it conforms, 1 not."""
    from fedtumor.federation.conformance import run_kit

    try:
        conforms = run_kit(name, console)
    except ConfigError as exc:
        fail(str(exc))
    if not conforms:
        raise typer.Exit(EXIT_PROBLEMS)
