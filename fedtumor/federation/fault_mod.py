"""Carries out the test-only ``fault-injection`` run-config switch (parsed in ``fedtumor/federation/faults.py``).

A Flower mod around the ClientApp's train handler, which the ClientApp's gate imports and calls
only while the key is set: after training, the named site, in the named round, raises, dies,
stalls past the round timeout, or corrupts what it sends.
"""

from __future__ import annotations

import os
import time

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.logger import FLOWER_LOGGER as log

from fedtumor.core.config import load_run_config
from fedtumor.federation.faults import fault_for
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    SERVER_ROUND_KEY,
    SITE_ID_KEY,
    SITE_RECORD_KEY,
)

TIMEOUT_MARGIN_S = 5.0  # sleep this much past the round timeout
SCALE_FACTOR = 1000.0
CRASH_AFTER_FRACTION = 0.5  # of round-timeout-s


class InjectedFault(RuntimeError):
    """The exception a ``raise`` fault throws."""


def fault_injection_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The handler's reply, changed (or never returned) as the fault for this site and round says.

    The site is the one the reply names; an error reply (bad data or config) goes out as it is.
    """
    reply = call_next(message, context)
    if reply.has_error():
        return reply
    config = load_run_config(context.run_config)
    site_id = str(reply.content[SITE_RECORD_KEY][SITE_ID_KEY])
    server_round = int(message.content[CONFIG_KEY].get(SERVER_ROUND_KEY, 0))
    kind = fault_for(config.fault_injection, site_id, server_round)
    if kind is None:
        return reply
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
    elif kind == "zero-examples":
        reply.content[METRICS_KEY][NUM_EXAMPLES_KEY] = 0
    else:
        reply.content[ARRAYS_KEY] = corrupted(kind, reply.content[ARRAYS_KEY], message.content[ARRAYS_KEY])
    return reply


def corrupted(kind: str, arrays: ArrayRecord, sent: ArrayRecord) -> ArrayRecord:
    """``arrays`` after a ``nan``, ``shape`` or ``scale`` fault; ``sent`` is the global model received."""
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
    else:
        raise ValueError(f"fault {kind!r} does not change the arrays")
    return ArrayRecord(changed)


def _first_float_key(arrays: ArrayRecord) -> str:
    return next(key for key, array in arrays.items() if np.issubdtype(np.dtype(array.dtype), np.floating))
