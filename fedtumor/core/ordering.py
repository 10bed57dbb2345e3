"""The one sort order for site and subject ids: embedded numbers by value, letters without case.

``site-2`` comes before ``site-10``, so tables, plots and the order in which replies are
aggregated read the way a person numbers sites.
"""

from __future__ import annotations

import re


def natural_key(text: str) -> list[int | str]:
    """Sort key that orders embedded numbers by value: "site2" before "site10", "2" before "10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]
