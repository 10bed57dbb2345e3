"""Conformance kit: does a strategy plugin keep the contract fedtumor's federations rely on?

It runs the plugin's strategy in short in-process federations (``harness``: five simulated
sites on a tiny 3D model, every message serialised as between processes), applies the checks
(``checks``) and reports them (``report``). Use it from the command line
(``fedtumor strategies check NAME``) or in a plugin's own tests::

    from fedtumor.federation.conformance import assert_conforms

    def test_my_plugin_conforms():
        assert_conforms(MyPlugin)
        assert_conforms(MyPlugin, "alpha=0.9")  # at the parameters you will run (--strategy-config)

``site_instruction``, ``site_reply`` and ``as_serverapp`` help tests and benchmarks build the messages a strategy
receives outside a running ServerApp.
"""

from fedtumor.federation.conformance.checks import CHECKS, FAIL, PASS, SKIP, Outcome, check_rounds_and_state
from fedtumor.federation.conformance.harness import FakeGrid, Harness, as_serverapp, site_instruction, site_reply
from fedtumor.federation.conformance.report import CheckResult, assert_conforms, print_results, run_checks, run_kit

__all__ = [
    "CHECKS",
    "FAIL",
    "PASS",
    "SKIP",
    "CheckResult",
    "FakeGrid",
    "Harness",
    "Outcome",
    "as_serverapp",
    "assert_conforms",
    "check_rounds_and_state",
    "print_results",
    "run_checks",
    "run_kit",
    "site_instruction",
    "site_reply",
]
