"""Durations as an operator types them on the command line: ``24h``, ``90m``, ``1h30m``, ``45s``,
``7d``; a bare number is seconds. Pure: no I/O."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
# Beyond this an overlap is a mistake (and timedelta/timestamptz arithmetic would overflow first).
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """``24h`` -> timedelta(hours=24). Units d, h, m, s, largest first, each at most once;
    ``0`` is zero. Raises ValueError with a message fit for the operator."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    else:
        parts = _PART.findall(value)
        units = [unit for _, unit in parts]
        if (
            not parts
            or "".join(n + u for n, u in parts) != value
            or units != sorted(set(units), key=list(_UNITS).index)
        ):
            raise ValueError(f"{text!r} is not a duration such as 24h, 90m, 1h30m or 45s")
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is longer than {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)
