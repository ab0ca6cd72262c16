"""Reads for the operator's dashboard that the /v1 routes do not make: batches filtered by
status, a batch's calls counted by status and outcome in one pass, its newest events with their
delivery state, and calls found by number or outcome. Every read is of one tenant's rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg2.extras import RealDictCursor

from batchcalls.adapters.store.db import execute
from batchcalls.domain.states import ACTIVE_BATCH_STATUSES, LIVE_STATUSES, CallStatus, values


def batches_page(
    cur: RealDictCursor, tenant_id: int, limit: int, after: tuple[str, str] | None, status: str | None
) -> list[dict[str, Any]]:
    """Newest first, as `batches.list_batches` reads them (keyset on created_at and id, never
    OFFSET), with only the batches in `status` when one is given."""
    sql = "SELECT * FROM batches WHERE tenant_id = %s"
    params: list[Any] = [tenant_id]
    if status is not None:
        sql += " AND status = %s"
        params.append(status)
    if after is not None:
        sql += " AND (created_at, id) < (%s::timestamptz, %s)"
        params += [after[0], after[1]]
    cur.execute(sql + " ORDER BY created_at DESC, id DESC LIMIT %s", (*params, limit))
    return list(cur.fetchall())


def call_tally(cur: RealDictCursor, batch_id: str) -> dict[str, Any]:
    """One pass over the batch's calls: `by_status` (call status: count), `by_outcome` (final
    outcome: count), `dials` (attempts made so far) and `next_opening` (the earliest
    `next_attempt_at` of a scheduled call: a retry or a calling window's opening)."""
    execute(
        cur,
        "SELECT status, outcome, count(*) AS n, sum(attempt_count) AS dials,"
        " min(next_attempt_at) FILTER (WHERE status = %s) AS next_opening"
        " FROM calls WHERE batch_id = %s GROUP BY status, outcome",
        (CallStatus.SCHEDULED.value, batch_id),
    )
    by_status: dict[str, int] = {}
    by_outcome: dict[str, int] = {}
    dials = 0
    openings: list[datetime] = []
    for row in cur.fetchall():
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        if row["outcome"] is not None:
            by_outcome[row["outcome"]] = by_outcome.get(row["outcome"], 0) + row["n"]
        dials += int(row["dials"] or 0)
        if row["next_opening"] is not None:
            openings.append(row["next_opening"])
    return {
        "by_status": by_status,
        "by_outcome": by_outcome,
        "dials": dials,
        "next_opening": min(openings, default=None),
    }


def newest_events(cur: RealDictCursor, batch_id: str, limit: int) -> list[dict[str, Any]]:
    """The batch's newest events with their delivery state, newest first."""
    execute(
        cur,
        "SELECT seq, id, type, created_at, delivered_at, given_up_at, delivery_attempts, next_attempt_at,"
        " last_error FROM events WHERE batch_id = %s ORDER BY seq DESC LIMIT %s",
        (batch_id, limit),
    )
    return list(cur.fetchall())


def undelivered_events(cur: RealDictCursor, tenant_id: int) -> int:
    """The tenant's events not yet delivered nor given up: its delivery backlog."""
    cur.execute(
        "SELECT count(*) AS n FROM events e JOIN batches b ON b.id = e.batch_id"
        " WHERE b.tenant_id = %s AND e.delivered_at IS NULL AND e.given_up_at IS NULL",
        (tenant_id,),
    )
    return int(cur.fetchone()["n"])


def active_batches_live(cur: RealDictCursor, tenant_id: int) -> list[dict[str, Any]]:
    """The tenant's active batches (`id`) with their calls live now (`live`)."""
    cur.execute(
        "SELECT b.id, (SELECT count(*) FROM calls c WHERE c.batch_id = b.id AND c.status = ANY(%s)) AS live"
        " FROM batches b WHERE b.tenant_id = %s AND b.status = ANY(%s)",
        (values(LIVE_STATUSES), tenant_id, values(ACTIVE_BATCH_STATUSES)),
    )
    return list(cur.fetchall())


def find_calls(
    cur: RealDictCursor,
    batch_id: str,
    limit: int,
    after_seq: int,
    *,
    status: str | None = None,
    outcome: str | None = None,
    phone_number: str | None = None,
) -> list[dict[str, Any]]:
    """A page of the batch's calls in submission order after `after_seq`, only those with the
    given status, outcome and number (each when given)."""
    sql = "SELECT * FROM calls WHERE batch_id = %s AND seq > %s"
    params: list[Any] = [batch_id, after_seq]
    for column, value in (("status", status), ("outcome", outcome), ("phone_number", phone_number)):
        if value is not None:
            sql += f" AND {column} = %s"
            params.append(value)
    cur.execute(sql + " ORDER BY seq LIMIT %s", (*params, limit))
    return list(cur.fetchall())


def own_call(cur: RealDictCursor, batch_id: str, call_id: str) -> dict[str, Any] | None:
    """The call when it belongs to the batch (the caller has checked the batch is the tenant's)."""
    cur.execute("SELECT * FROM calls WHERE id = %s AND batch_id = %s", (call_id, batch_id))
    row: dict[str, Any] | None = cur.fetchone()
    return row
