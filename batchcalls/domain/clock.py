"""The clock the core reads "now" from, injectable so tests can move time.

`SystemClock` is the real time; `OffsetClock` is the real time shifted by a fixed number of
seconds (the real stack builds it from a setting, so a test can run calling windows at another
hour without waiting). Both give aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """The system time plus `offset_seconds` (negative for the past)."""

    def __init__(self, offset_seconds: float) -> None:
        self.offset = timedelta(seconds=offset_seconds)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset
