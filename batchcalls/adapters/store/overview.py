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


def dial_history(cur: RealDictCursor, batch_id: str, buckets: int) -> tuple[float, list[tuple[int, int]]]:
    """The batch's whole life in `buckets` equal spans, from its first dial to its last end (or
    now): (the span's seconds, [(dials in the span, calls live at its end)]). Empty before the
    first dial. One pass over the batch's attempts: each dial adds a live call in its span, each
    end takes it away in its own, and a running sum gives the calls live at each span's end (at
    most the batch's concurrency; a call begun and ended within one span shows in its dials)."""
    execute(
        cur,
        "WITH a AS (SELECT t.dialed_at AS s, t.ended_at AS e"
        "  FROM attempts t JOIN calls c ON c.id = t.call_id WHERE c.batch_id = %s),"
        " r AS (SELECT min(s) AS lo,"
        "  greatest(extract(epoch FROM max(coalesce(e, clock_timestamp())) - min(s)), 1) / %s AS width FROM a),"
        " edges AS ("
        "  SELECT least(floor(extract(epoch FROM a.s - r.lo) / r.width)::int, %s - 1) AS k, 1 AS dial, 1 AS delta"
        "  FROM a, r"
        "  UNION ALL SELECT least(floor(extract(epoch FROM a.e - r.lo) / r.width)::int, %s - 1), 0, -1"
        "  FROM a, r WHERE a.e IS NOT NULL)"
        " SELECT k, sum(dial) AS dials, sum(sum(delta)) OVER (ORDER BY k) AS live, max(r.width) AS width"
        " FROM edges, r GROUP BY k ORDER BY k",
        (batch_id, buckets, buckets, buckets),
    )
    rows = cur.fetchall()
    if not rows:
        return 0.0, []
    found = {int(row["k"]): (int(row["dials"]), int(row["live"])) for row in rows}
    spans: list[tuple[int, int]] = []
    live = 0
    for k in range(buckets):  # a span with no dial and no end keeps the live calls of the one before
        dials, live = found.get(k, (0, live))
        spans.append((dials, live))
    return float(rows[0]["width"]), spans
