"""`fedtumor strategies`: list the installed plugins, run one through the conformance kit, benchmark one."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fedtumor.cli.common import EXIT_PROBLEMS, app, console, error_console, fail
from fedtumor.core.errors import ConfigError

strategies_app = typer.Typer(
    help="Aggregation strategies: list the installed plugins, check one, benchmark one.", no_args_is_help=True
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
def strategies_check(
    name: str = typer.Argument(..., help="A strategy that `strategies list` shows."),
    strategy_config: str = typer.Option(
        "", "--strategy-config", help='Its parameters, "key=value ..." (TOML values); default: its defaults.'
    ),
) -> None:
    """Run a strategy through the conformance kit (a short in-process federation): exit 0 when it conforms, 1 not."""
    from fedtumor.federation.conformance import run_kit

    try:
        conforms = run_kit(name, console, strategy_config)
    except ConfigError as exc:
        fail(str(exc))
    if not conforms:
        raise typer.Exit(EXIT_PROBLEMS)


@strategies_app.command("benchmark")
def strategies_benchmark(
    name: str = typer.Argument(..., help="A strategy that `strategies list` shows."),
    out: Path = typer.Option(..., "--out", help="Folder for the cohort, the runs, the table and the plot."),
    seeds: list[int] = typer.Option([0], "--seed", help="Training seed; repeat for more (default 0)."),
    rounds: int = typer.Option(None, "--rounds", min=2, help="num-server-rounds (default 3)."),
    run_config: str = typer.Option("", "--run-config", help="More run-config overrides for every method."),
    app_dir: Path = typer.Option(None, "--app-dir", help="The fedtumor Flower app (default: the current folder)."),
) -> None:
    """FeTS Task 1 scores of NAME next to FedAvg: the reduced standard study under FeTS's time model."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from fedtumor.bench.compare_study import run_study
    from fedtumor.bench.strategy_benchmark import (
        BENCHMARK_FILES,
        HEADERS,
        benchmark_plan,
        display_row,
        prepare_benchmark,
        write_benchmark,
    )
    from fedtumor.core.config import find_app_dir
    from fedtumor.core.errors import DataError
    from fedtumor.federation.registry import load_registry

    try:
        load_registry().get(name)  # an unknown or broken plugin: one line, before any run
        app_dir = app_dir or find_app_dir(Path.cwd())
        if app_dir is None:
            raise ConfigError("--app-dir: the current folder is not a Flower app; pass the fedtumor checkout")
        study = prepare_benchmark(benchmark_plan(name, seeds, rounds, run_config), out, app_dir)
    except (ConfigError, DataError, ValueError) as exc:
        fail(str(exc))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        records = run_study(study, progress)
    for record in records:
        if not record.ok:
            error_console.print(f"{escape(record.method)} seed {record.seed}: FAILED: {escape(record.error)}")
    rows = write_benchmark(study, records, name)
    if not rows:
        fail(f"no run finished; see the logs under {study.logs}", EXIT_PROBLEMS)
    table = Table(title=f"FeTS Task 1 scores: {name} next to fedavg (held-out test set, final model)")
    for index, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*display_row(row))
    console.print(table)
    console.print(f"wrote {', '.join(str(study.out / file) for file in BENCHMARK_FILES)}", highlight=False)
    if not all(record.ok for record in records):
        raise typer.Exit(EXIT_PROBLEMS)
