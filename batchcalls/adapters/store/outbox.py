"""The transactional outbox: events are written in the transaction that makes the change they
report, and a relay delivers them afterwards (at least once, in order per batch)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg2.extras import Json, RealDictCursor

from batchcalls.adapters.store.db import execute
from batchcalls.domain.events import EventType, make_event


def add_event(
    cur: RealDictCursor,
    event_type: EventType,
    batch_id: str,
    data: dict[str, Any],
    known: tuple[datetime, str | None] | None = None,
) -> str:
    """Write one event of a batch. A batch without a callback URL keeps its events as a record
    only: they are stored already settled, so the relay never picks them up. `known` is the
    database time and the batch's callback URL when the caller has both (else they are read)."""
    if known is None:
        execute(cur, "SELECT clock_timestamp() AS now, callback_url FROM batches WHERE id = %s", (batch_id,))
        row = cur.fetchone()
    else:
        row = {"now": known[0], "callback_url": known[1]}
    event = make_event(event_type, batch_id, data, row["now"])
    execute(
        cur,
        "INSERT INTO events (id, batch_id, type, payload, created_at, given_up_at, last_error)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            event["id"],
            batch_id,
            event["type"],
            Json(event),
            row["now"],
            None if row["callback_url"] else row["now"],
            None if row["callback_url"] else "no callback_url",
        ),
    )
    return str(event["id"])


def pending_events(cur: RealDictCursor, batch_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """Undelivered events of a batch in creation order, from the first one on."""
    execute(
        cur,
        "SELECT seq, id, payload, delivery_attempts, next_attempt_at, created_at FROM events"
        " WHERE batch_id = %s AND delivered_at IS NULL AND given_up_at IS NULL"
        " ORDER BY seq LIMIT %s",
        (batch_id, limit),
    )
    return list(cur.fetchall())


def mark_delivered_many(cur: RealDictCursor, seqs: list[int]) -> None:
    execute(
        cur,
        "UPDATE events SET delivered_at = clock_timestamp(), delivery_attempts = delivery_attempts + 1,"
        " last_error = NULL WHERE seq = ANY(%s)",
        (seqs,),
    )


def mark_failed(cur: RealDictCursor, seq: int, error: str, retry_in: float, *, give_up: bool) -> None:
    execute(
        cur,
        "UPDATE events SET delivery_attempts = delivery_attempts + 1, last_error = %s,"
        " next_attempt_at = clock_timestamp() + %s::interval,"
        " given_up_at = CASE WHEN %s::boolean THEN clock_timestamp() END WHERE seq = %s",
        (error[:500], timedelta(seconds=retry_in), give_up, seq),
    )


def batches_with_due_events(cur: RealDictCursor, limit: int = 1000) -> list[str]:
    execute(
        cur,
        "SELECT DISTINCT batch_id FROM events WHERE delivered_at IS NULL AND given_up_at IS NULL"
        " AND next_attempt_at <= clock_timestamp() LIMIT %s",
        (limit,),
    )
    return [row["batch_id"] for row in cur.fetchall()]
