"""Carries out the test-only ``fault-injection`` run-config switch (parsed in ``fedtumor/federation/faults.py``).

One call in the ClientApp's train handler, just before it replies: the named site, in the
named round, raises, dies, stalls past the round timeout, or corrupts what it sends.
With the key empty (the default) nothing happens.
"""

from __future__ import annotations

import os
import time

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common.logger import FLOWER_LOGGER as log

from fedtumor.core.config import RunConfig
from fedtumor.federation.faults import fault_for
from fedtumor.federation.wire import NUM_EXAMPLES_KEY

TIMEOUT_MARGIN_S = 5.0  # sleep this much past the round timeout
SCALE_FACTOR = 1000.0
CRASH_AFTER_FRACTION = 0.5  # of round-timeout-s


class InjectedFault(RuntimeError):
    """The exception a ``raise`` fault throws."""


def _first_float_key(arrays: ArrayRecord) -> str:
    return next(key for key, array in arrays.items() if np.issubdtype(np.dtype(array.dtype), np.floating))


def inject_fault(
    config: RunConfig, site_id: str, server_round: int, arrays: ArrayRecord, metrics: dict, sent: ArrayRecord
) -> tuple[ArrayRecord, dict]:
    """The reply's arrays and metrics, changed (or never returned) as the fault for this site and round says."""
    kind = fault_for(config.fault_injection, site_id, server_round) if config.fault_injection else None
    if kind is None:
        return arrays, metrics
    log.warning("fault-injection: %s round %d: %s", site_id, server_round, kind)
    if kind == "raise":
        raise InjectedFault(f"injected fault: {site_id} raises in round {server_round}")
    if kind == "crash":
        # Die half-way through the round, after the other sites' training: Flower 1.41's Ray backend keeps
        # the dead worker in its pool and fails whatever it routes there next (see docs/reliability.md).
        time.sleep(config.round_timeout_s * CRASH_AFTER_FRACTION)
        os._exit(3)  # no clean-up, no reply: what a killed node looks like
    if kind == "timeout":
        time.sleep(config.round_timeout_s + TIMEOUT_MARGIN_S)
        return arrays, metrics
    if kind == "zero-examples":
        return arrays, {**metrics, NUM_EXAMPLES_KEY: 0}
    changed = dict(arrays.items())
    key = _first_float_key(arrays)
    values = arrays[key].numpy()
    if kind == "nan":
        changed[key] = Array(np.full_like(values, np.nan))
    elif kind == "shape":
        changed[key] = Array(np.zeros(values.size + 1, dtype=values.dtype))
    elif kind == "scale":
        changed = {
            name: Array((sent[name].numpy() + SCALE_FACTOR * (array.numpy() - sent[name].numpy())).astype(array.dtype))
            if name in sent and np.issubdtype(np.dtype(array.dtype), np.floating)
            else array
            for name, array in arrays.items()
        }
    return ArrayRecord(changed), metrics
