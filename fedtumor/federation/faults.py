"""The test-only fault switch: run-config key ``fault-injection`` parsed into a plan.

``fault-injection = "site-2:raise@1 site-3:timeout@2 site-1:nan@2"`` makes the named site
misbehave in the named training round, so tests can show that a round survives it. A Flower
mod on the client side (``fedtumor/federation/fault_mod.py``) carries the faults out, and only
while the key is set; this module only parses and validates the text, so the config check
needs no Flower.

Faults (training replies only):

- ``raise``: the ClientApp raises an exception (Flower replies with an error message);
- ``crash``: the ClientApp's process exits (``os._exit``) half-way through the round timeout,
  as a node killed mid-round would;
- ``timeout``: the ClientApp sleeps past ``round-timeout-s`` before replying;
- ``nan``: the reply's first floating-point array is all NaN;
- ``shape``: the reply's first array has one element more than the global model's;
- ``zero-examples``: the reply reports ``num-examples = 0``;
- ``scale``: the update (reply minus the global model) is multiplied by 1000.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FAULT_INJECTION_KEY = "fault-injection"  # the run-config key; empty (the default) = no faults
FAULT_KINDS = ("raise", "crash", "timeout", "nan", "shape", "zero-examples", "scale")
_TOKEN = re.compile(r"(?P<site>[A-Za-z0-9_.-]+):(?P<kind>[a-z-]+)@(?P<round>\d+)")


@dataclass(frozen=True)
class Fault:
    site_id: str
    kind: str
    server_round: int


def parse_faults(text: str) -> tuple[Fault, ...]:
    """``"site:kind@round ..."`` -> faults; ValueError naming the token that is wrong."""
    faults = []
    for token in text.split():
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise ValueError(f"{token!r} is not SITE:KIND@ROUND (e.g. 'site-2:raise@1')")
        if match["kind"] not in FAULT_KINDS:
            raise ValueError(f"{token!r}: fault {match['kind']!r} is not one of {', '.join(FAULT_KINDS)}")
        if int(match["round"]) < 1:
            raise ValueError(f"{token!r}: rounds start at 1")
        faults.append(Fault(match["site"], match["kind"], int(match["round"])))
    return tuple(faults)


def fault_for(text: str, site_id: str, server_round: int) -> str | None:
    """The fault this site must show in this round, or None."""
    for fault in parse_faults(text):
        if fault.site_id == site_id and fault.server_round == server_round:
            return fault.kind
    return None
