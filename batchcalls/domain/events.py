"""Batch event envelopes (DESIGN.md §3) and the retry schedule of their delivery. Pure: no I/O.

An event is created exactly once, with one id, in the same transaction as the change it reports
(the outbox); delivery is at-least-once and the receiver dedupes by ``id``. Signing lives in
`batchcalls.domain.signing`, the HTTP POST in the delivery adapter.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import Enum
from secrets import token_hex
from typing import Any

from batchcalls.domain.timefmt import isoformat_ms

EVENT_ID_PREFIX = "evt_"

# Delivery retries: 1 s, 2 s, 4 s, ... up to MAX_BACKOFF_SECONDS between attempts, for at least
# MIN_DELIVERY_RETRY_PERIOD after the event was created. Roughly 35 attempts fit in 24 hours.
BASE_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 3600.0
BACKOFF_JITTER = 0.2
MIN_DELIVERY_RETRY_PERIOD = timedelta(hours=24)


class EventType(str, Enum):
    BATCH_STARTED = "batch.started"
    CALL_COMPLETED = "batch.call_completed"
    CALL_FAILED = "batch.call_failed"
    BATCH_COMPLETED = "batch.completed"
    BATCH_FAILED = "batch.failed"
    BATCH_CANCELLED = "batch.cancelled"
    BATCH_PAUSED = "batch.paused"
    BATCH_RESUMED = "batch.resumed"


CALL_EVENT_TYPES = frozenset({EventType.CALL_COMPLETED, EventType.CALL_FAILED})
"""Events whose ``data`` is one call as ``/calls`` shows it."""


def new_event_id() -> str:
    """A fresh event id: ``evt_`` and 24 random hex characters (96 bits)."""
    return EVENT_ID_PREFIX + token_hex(12)


def make_event(
    event_type: EventType | str,
    batch_id: str,
    data: Mapping[str, Any],
    created_at: datetime,
    *,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The envelope ``{"id", "type", "created_at", "batch_id", "data"}`` of a new event.

    `event_type` must be one of `EventType` (ValueError otherwise). `data` is copied shallowly
    and must already be JSON-ready (timestamps formatted with `isoformat_ms`). `event_id` is
    for tests and replays; a new id is drawn when it is None.
    """
    return {
        "id": event_id if event_id is not None else new_event_id(),
        "type": EventType(event_type).value,
        "created_at": isoformat_ms(created_at),
        "batch_id": batch_id,
        "data": dict(data),
    }


def backoff_seconds(delivery_attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before the next delivery attempt of an event, after `delivery_attempts`
    failed ones (>= 1): 1, 2, 4, 8, ... capped at 3600, each times a uniform jitter factor in
    [0.8, 1.2) drawn from `rand` (a source of floats in [0, 1), like `random.random`), so the
    receivers of a burst are not all retried in the same second.

    The schedule never ends by itself: the caller keeps retrying until its deadline, which must
    be at least `MIN_DELIVERY_RETRY_PERIOD` (24 hours) after the event was created, and then
    gives up. Raises ValueError when `delivery_attempts` is below 1.
    """
    if isinstance(delivery_attempts, bool) or delivery_attempts < 1:
        raise ValueError("delivery_attempts must be 1 or more")
    # Clamp the exponent so a huge attempt count cannot overflow; 2**12 is past the cap already.
    exponent = min(delivery_attempts - 1, 12)
    base = min(BASE_BACKOFF_SECONDS * 2.0**exponent, MAX_BACKOFF_SECONDS)
    return base * (1 + BACKOFF_JITTER * (2 * rand() - 1))
