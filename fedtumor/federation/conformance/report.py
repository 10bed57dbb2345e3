"""Running the conformance kit on a plugin: results, the rich table, and the test-suite assertion."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedtumor.core.errors import ConfigError
from fedtumor.federation.conformance.checks import CHECKS, FAIL, PASS, SKIP, Outcome
from fedtumor.federation.conformance.harness import Harness, as_serverapp, one_thread_own_rng, quiet_flower
from fedtumor.federation.params import parse_params
from fedtumor.federation.plugin import StrategyPlugin
from fedtumor.federation.registry import Registry, load_registry


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    reason: str
    seconds: float


def run_checks(
    plugin: type[StrategyPlugin], registry: Registry | None = None, strategy_config: str = ""
) -> list[CheckResult]:
    """Every check on ``plugin`` built with ``strategy_config`` ("key=value ...", default: its defaults).

    ``registry`` is where its client hooks are found (default: just the plugin).
    """
    check_strategy_config(plugin, strategy_config)
    registry = registry or Registry(plugins={plugin.name: plugin})
    results = []
    round_1: dict[str, tuple] = {}
    with quiet_flower(), as_serverapp(), one_thread_own_rng():
        for name, check in CHECKS.items():
            started = time.perf_counter()
            try:
                outcome = check(Harness(plugin, registry, strategy_config, round_1=round_1))
            except Exception as exc:  # a crash is a failure with its reason
                outcome = Outcome(FAIL, f"raised {type(exc).__name__}: {exc}")
            results.append(CheckResult(name, outcome.status, outcome.reason, time.perf_counter() - started))
    return results


def check_strategy_config(plugin: type[StrategyPlugin], strategy_config: str) -> None:
    """A one-line ConfigError naming ``--strategy-config`` and the bad key, before any check runs."""
    defaults = {name: parameter.default for name, parameter in plugin.parameters.items()}
    try:
        parse_params(strategy_config, defaults, owner=plugin.name)
    except ValueError as exc:
        raise ConfigError(f"--strategy-config: {exc}") from None


def print_results(
    plugin: type[StrategyPlugin], results: list[CheckResult], console: Console, strategy_config: str = ""
) -> None:
    title = f"conformance of strategy {plugin.name!r}" + (f" with {strategy_config!r}" if strategy_config else "")
    table = Table(title=title)
    table.add_column("check")
    table.add_column("result")
    table.add_column("reason")
    style = {PASS: "green", FAIL: "bold red", SKIP: "yellow"}
    for result in results:
        table.add_row(result.name, f"[{style[result.status]}]{result.status}[/]", escape(result.reason))
    console.print(table)
    failed = [r.name for r in results if r.status == FAIL]
    verdict = f"[bold red]FAILED[/]: {escape(', '.join(failed))}" if failed else "[green]conforms[/]"
    console.print(f"{escape(plugin.name)}: {verdict}")


def run_kit(name: str, console: Console, strategy_config: str = "") -> bool:
    """Check the installed plugin ``name`` at ``strategy_config``; print a table; True iff no check failed.

    Skips are fine. An unknown or broken plugin, or a bad ``strategy_config``, raises
    :class:`fedtumor.core.errors.ConfigError` (one line naming the plugin or the key).
    """
    registry = load_registry()
    plugin = registry.get(name)
    results = run_checks(plugin, registry, strategy_config)
    print_results(plugin, results, console, strategy_config)
    return all(r.status != FAIL for r in results)


def assert_conforms(plugin: type[StrategyPlugin], strategy_config: str = "") -> None:
    """For a plugin's own tests: raise AssertionError listing every failed check and its reason."""
    results = run_checks(plugin, strategy_config=strategy_config)
    failed = [f"{r.name}: {r.reason}" for r in results if r.status == FAIL]
    if failed:
        raise AssertionError(f"strategy plugin {plugin.name!r} fails the conformance kit:\n  " + "\n  ".join(failed))
