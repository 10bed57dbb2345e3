"""Running the conformance kit on a plugin: results, the rich table, and the test-suite assertion."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedtumor.federation.conformance.checks import CHECKS, FAIL, PASS, SKIP, Outcome
from fedtumor.federation.conformance.harness import Harness, as_serverapp, one_thread_own_rng, quiet_flower
from fedtumor.federation.plugin import StrategyPlugin
from fedtumor.federation.registry import Registry, load_registry


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    reason: str
    seconds: float


def run_checks(plugin: type[StrategyPlugin], registry: Registry | None = None) -> list[CheckResult]:
    """Every check on ``plugin``; ``registry`` is where its client hooks are found (default: just the plugin)."""
    registry = registry or Registry(plugins={plugin.name: plugin})
    results = []
    round_1: dict[str, tuple] = {}
    with quiet_flower(), as_serverapp(), one_thread_own_rng():
        for name, check in CHECKS.items():
            started = time.perf_counter()
            try:
                outcome = check(Harness(plugin, registry, round_1=round_1))
            except Exception as exc:  # a crash is a failure with its reason
                outcome = Outcome(FAIL, f"raised {type(exc).__name__}: {exc}")
            results.append(CheckResult(name, outcome.status, outcome.reason, time.perf_counter() - started))
    return results


def print_results(plugin: type[StrategyPlugin], results: list[CheckResult], console: Console) -> None:
    table = Table(title=f"conformance of strategy {plugin.name!r}")
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


def run_kit(name: str, console: Console) -> bool:
    """Check the installed plugin ``name``; print a table; True iff no check failed (skips are fine).

    An unknown or broken plugin raises :class:`fedtumor.core.errors.ConfigError` (from ``Registry.get``).
    """
    registry = load_registry()
    plugin = registry.get(name)
    results = run_checks(plugin, registry)
    print_results(plugin, results, console)
    return all(r.status != FAIL for r in results)


def assert_conforms(plugin: type[StrategyPlugin]) -> None:
    """For a plugin's own tests: raise AssertionError listing every failed check and its reason."""
    results = run_checks(plugin)
    failed = [f"{r.name}: {r.reason}" for r in results if r.status == FAIL]
    if failed:
        raise AssertionError(f"strategy plugin {plugin.name!r} fails the conformance kit:\n  " + "\n  ".join(failed))
