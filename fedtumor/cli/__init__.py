"""The `fedtumor` command line: everything that is not `flwr run`.

This package is the composition root: one module per group of commands, each registering on
the one typer ``app`` of :mod:`fedtumor.cli.common`. Commands import ``data_loaders`` lazily,
so the rest of ``fedtumor/`` stays free of data-layout and Flower code.
"""

# isort: off
# Registration order is the order of `fedtumor --help`: data first, then baselines, security, audit.
from fedtumor.cli import data, checks, scoring, predict, baselines, cross_site, security, node, audit, strategies  # noqa: F401

# isort: on
from fedtumor.cli.common import app, console, error_console, fail
from fedtumor.deployment.centre_cli import centre_app

app.add_typer(centre_app, name="centre")  # the coordinating centre's commands, e.g. its proxy

__all__ = ["app", "console", "error_console", "fail", "main"]


def main() -> None:  # pragma: no cover - console entry point
    app()
