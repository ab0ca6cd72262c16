"""The one timestamp format of the public API: ISO 8601, UTC, milliseconds, a trailing ``Z``; and
the timestamps a request gives (`start_at`, `expires_at`), read."""

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
    parsed = _parse_aware("expires_at", value)
    if parsed is not None and now is not None and parsed <= now:
        raise InvalidRequest("expires_at has passed already", {"expires_at": ["in the past"]})
    return parsed


def parse_start_at(value: str | None, expires_at: datetime | None) -> datetime | None:
    """`start_at` as an aware datetime: ISO 8601 with a UTC offset (or `Z`), before `expires_at`.
    A `start_at` now or past is kept as given: the batch starts at once."""
    parsed = _parse_aware("start_at", value)
    if parsed is not None and expires_at is not None and parsed >= expires_at:
        raise InvalidRequest("start_at is not before expires_at", {"start_at": ["not before expires_at"]})
    return parsed


def _parse_aware(name: str, value: str | None) -> datetime | None:
    """The request's timestamp `name`: ISO 8601 with a UTC offset; None stays None."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as e:
        raise InvalidRequest(
            f"{name} is not an ISO 8601 date and time", {name: ["not an ISO 8601 date and time"]}
        ) from e
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidRequest(f"{name} needs a UTC offset (such as +02:00 or Z)", {name: ["no UTC offset"]})
    return parsed
