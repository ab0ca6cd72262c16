"""Reads of calls and attempts in Postgres (the writes are in `batchcalls.adapters.store.calls`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from psycopg2.extras import RealDictCursor

from batchcalls.adapters.store.db import Database, execute
from batchcalls.domain.call_lists import SKIPPED_OUTCOMES, SKIPPED_STATUSES
from batchcalls.domain.payloads import call_view
from batchcalls.domain.states import LIVE_STATUSES, UNFINISHED_STATUSES, AttemptStatus, CallStatus, values


def load_call(cur: RealDictCursor, call_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    execute(cur, "SELECT * FROM calls WHERE id = %s" + (" FOR UPDATE" if lock else ""), (call_id,))
    row: dict[str, Any] | None = cur.fetchone()
    return row


def attempts_of(cur: RealDictCursor, call_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {cid: [] for cid in call_ids}
    if call_ids:
        execute(cur, "SELECT * FROM attempts WHERE call_id = ANY(%s) ORDER BY number", (call_ids,))
        for row in cur.fetchall():
            found[row["call_id"]].append(row)
    return found


def full_call(cur: RealDictCursor, call: dict[str, Any]) -> dict[str, Any]:
    return call_view(call, attempts_of(cur, [call["id"]])[call["id"]])


def skipped_calls(cur: RealDictCursor, batch_id: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The batch's calls skipped at submit (`invalid_numbers: skip`, never dialed): how many, and
    the first `limit` of them in submission order. Read among the batch's failed calls (an
    index's range), which at submit are only these and the suppressed ones."""
    where = "batch_id = %s AND status = ANY(%s) AND outcome = ANY(%s) AND attempt_count = 0"
    params = (batch_id, sorted(s.value for s in SKIPPED_STATUSES), sorted(o.value for o in SKIPPED_OUTCOMES))
    execute(cur, f"SELECT count(*) AS n FROM calls WHERE {where}", params)  # noqa: S608 - no input in the text
    count = int(cur.fetchone()["n"])
    rows: list[dict[str, Any]] = []
    if count:
        execute(
            cur,
            f"SELECT id, seq, phone_number, last_error FROM calls WHERE {where} ORDER BY seq LIMIT %s",  # noqa: S608
            (*params, limit),
        )
        rows = list(cur.fetchall())
    return count, rows


def list_calls(
    cur: RealDictCursor, batch_id: str, limit: int, after_seq: int, status: str | None
) -> list[dict[str, Any]]:
    if status is None:
        execute(
            cur,
            "SELECT * FROM calls WHERE batch_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (batch_id, after_seq, limit),
        )
    else:
        execute(
            cur,
            "SELECT * FROM calls WHERE batch_id = %s AND status = %s AND seq > %s ORDER BY seq LIMIT %s",
            (batch_id, status, after_seq, limit),
        )
    return list(cur.fetchall())


def calls_for_rebuild(cur: RealDictCursor, batch_id: str) -> list[dict[str, Any]]:
    execute(
        cur,
        "SELECT id, seq, priority, status, next_attempt_at FROM calls WHERE batch_id = %s AND status = ANY(%s)",
        (batch_id, values(UNFINISHED_STATUSES)),
    )
    return list(cur.fetchall())


def call_states(cur: RealDictCursor, call_ids: list[str]) -> dict[str, str]:
    execute(cur, "SELECT id, status FROM calls WHERE id = ANY(%s)", (call_ids,))
    return {row["id"]: row["status"] for row in cur.fetchall()}


def stale_attempts(cur: RealDictCursor, older_than: float, limit: int = 500) -> list[dict[str, Any]]:
    """Live attempts that have heard nothing from the provider for `older_than` seconds."""
    execute(
        cur,
        "SELECT a.*, c.phone_number, c.batch_id FROM attempts a JOIN calls c ON c.id = a.call_id"
        " WHERE a.status <> %s AND a.last_event_at < clock_timestamp() - %s::interval"
        " ORDER BY a.last_event_at LIMIT %s",
        (AttemptStatus.ENDED.value, timedelta(seconds=older_than), limit),
    )
    return list(cur.fetchall())


def batches_with_due_retries(cur: RealDictCursor) -> list[str]:
    execute(
        cur,
        "SELECT DISTINCT batch_id FROM calls WHERE status = %s AND next_attempt_at <= clock_timestamp()",
        (CallStatus.SCHEDULED.value,),
    )
    return [row["batch_id"] for row in cur.fetchall()]


def list_live(cur: RealDictCursor, batch_id: str) -> list[dict[str, Any]]:
    execute(cur, "SELECT id FROM calls WHERE batch_id = %s AND status = ANY(%s)", (batch_id, values(LIVE_STATUSES)))
    return list(cur.fetchall())


def queued_calls(db: Database, batch_id: str, *, delayed: bool) -> Iterator[tuple[str, int, int, datetime | None]]:
    """A stored batch's calls waiting to be dialed, read through a server-side cursor (constant
    memory however many): the queued ones, or with `delayed` the scheduled ones. (id, seq,
    priority, next_attempt_at)."""
    status = CallStatus.SCHEDULED if delayed else CallStatus.QUEUED
    with db.connection() as conn:
        try:
            with conn.cursor(name=f"queued_{batch_id}") as cur:
                cur.itersize = 10_000
                cur.execute(
                    "SELECT id, seq, priority, next_attempt_at FROM calls WHERE batch_id = %s AND status = %s",
                    (batch_id, status.value),
                )
                yield from cur
        finally:
            conn.rollback()  # it only read: end its transaction before the pool takes it back
