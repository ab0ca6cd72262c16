"""The one timestamp format of the public API: ISO 8601, UTC, milliseconds, a trailing ``Z``; and
the one timestamp a request gives (`expires_at`), read."""

from __future__ import annotations

from datetime import UTC, datetime

from batchcalls.domain.errors import InvalidRequest


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


def parse_expires_at(value: str | None, now: datetime | None) -> datetime | None:
    """`expires_at` as an aware datetime: ISO 8601 with a UTC offset (or `Z`), after `now`."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as e:
        raise InvalidRequest(
            "expires_at is not an ISO 8601 date and time", {"expires_at": ["not an ISO 8601 date and time"]}
        ) from e
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidRequest("expires_at needs a UTC offset (such as +02:00 or Z)", {"expires_at": ["no UTC offset"]})
    if now is not None and parsed <= now:
        raise InvalidRequest("expires_at has passed already", {"expires_at": ["in the past"]})
    return parsed
