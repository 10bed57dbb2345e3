"""Typed ``key=value`` parameters: a strategy's ``strategy-config`` and a FeTS hook's spec.

Both are written ``key=value key2=value2`` with TOML values (quote strings), and both are
checked against declared parameters whose defaults fix their types. :func:`parse_params`
does it for both; it raises ValueError naming the pair, and each caller adds the run-config
key the text came from.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping

ParameterValue = bool | int | float | str

# A key=value pair (a quoted value may hold spaces), or any other token, which is an error.
_TOKEN = re.compile(r"""(?P<key>[^\s=]+)=(?P<value>'[^']*'|"[^"]*"|\S+)|(?P<other>\S+)""")


def parse_params(text: str, defaults: Mapping[str, ParameterValue], owner: str) -> dict[str, ParameterValue]:
    """Every declared parameter: its default, or its value in ``text`` when given there.

    ``owner`` names whose parameters these are in the messages (a plugin, a built-in hook).
    An int is accepted for a float parameter; any other type mismatch is an error.
    """
    known = ", ".join(defaults) or "none"
    params = dict(defaults)
    for token in _TOKEN.finditer(text):
        if token["other"] is not None:
            raise ValueError(f"{token['other']!r} is not key=value (parameters of {owner}: {known})")
        key, raw = token["key"], token["value"]
        if key not in defaults:
            raise ValueError(f"{key!r} is not a parameter of {owner} (parameters: {known})")
        try:
            value = tomllib.loads(f"value = {raw}")["value"]
        except tomllib.TOMLDecodeError:
            raise ValueError(f"{owner}: cannot parse the value of {key!r}: {raw!r}") from None
        expected = type(defaults[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ValueError(f"{key!r} of {owner} expects {expected.__name__}, got {type(value).__name__} {value!r}")
        params[key] = value
    return params
