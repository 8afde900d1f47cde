"""Rate limits: parsing (used when a task is declared) and token buckets."""
from __future__ import annotations

import re
from typing import Any

from greenq.exceptions import ConfigurationError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


def parse_rate(rate: Any) -> float | None:
    """Tasks per second from ``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number.

    ``None``, ``0`` and ``"0"`` mean no limit and return None.

    Raises:
        ConfigurationError: the value is not a rate.
    """
    if rate is None:
        return None
    if isinstance(rate, bool):
        raise ConfigurationError(f"rate limit must be like '10/s', '100/m', '1000/h' or a number, got {rate!r}")
    if isinstance(rate, (int, float)):
        if rate < 0:
            raise ConfigurationError(f"rate limit cannot be negative: {rate!r}")
        return float(rate) or None
    if not isinstance(rate, str):
        raise ConfigurationError(f"rate limit must be like '10/s', '100/m', '1000/h' or a number, got {rate!r}")
    match = _RATE.match(rate)
    if not match:
        raise ConfigurationError(f"rate limit must be like '10/s', '100/m', '1000/h' or a number, got {rate!r}")
    count = float(match.group(1))
    per = _UNITS[match.group(2) or "s"]
    return count / per or None
