"""The one timestamp format of the public API: ISO 8601, UTC, milliseconds, a trailing ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def isoformat_ms(dt: datetime | None) -> str | None:
    """Format `dt` as ``2026-11-23T13:43:34.123Z``; None stays None.

    An aware datetime is converted to UTC. A naive one is taken to be UTC already (the store
    keeps UTC throughout), never local time. Sub-millisecond digits are truncated, not rounded,
    so a formatted time never lies after the instant it describes.
    """
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    else:
        dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
