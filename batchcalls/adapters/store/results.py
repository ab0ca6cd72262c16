"""A batch's results read in chunks from a server-side cursor: constant memory in the batch's
size. Each call's attempts are aggregated in SQL (one LATERAL subquery per call), never loaded
call by call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from batchcalls.adapters.store.db import Database

CHUNK_ROWS = 2000  # rows per round trip to the server-side cursor (its itersize)

# ISO 8601 UTC with milliseconds, truncated, as `batchcalls.domain.timefmt.isoformat_ms` writes.
_TS = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""

# One row per call, in `batchcalls.domain.results.COLUMNS` order. talk_time: seconds from
# answer to end of the call's last answered attempt; voicemail_left: any attempt left one.
_COLUMNS = {
    "id": "c.id",
    "phone_number": "c.phone_number",
    "status": "c.status",
    "outcome": "c.outcome",
    "attempts": "coalesce(a.attempts, 0)",
    "last_error": "c.last_error",
    "first_dialed_at": _TS.format("a.first_dialed_at"),
    "answered_at": _TS.format("a.answered_at"),
    "ended_at": _TS.format("a.last_ended_at"),
    "talk_time": "round(extract(epoch FROM a.talk_ended_at - a.answered_at)::numeric, 3)",
    "voicemail_left": "coalesce(a.voicemail_left, false)",
    "metadata": "c.metadata",
    "variables": "c.variables",
    "responses": "c.responses",
}

_FROM = (
    " FROM calls c LEFT JOIN LATERAL ("
    "  SELECT count(*) AS attempts, min(t.dialed_at) AS first_dialed_at, max(t.ended_at) AS last_ended_at,"
    # Attempts follow one another (each is dialed after the one before ended), so the last
    # answered attempt has both the latest answer and the latest end among the answered ones.
    "   max(t.answered_at) AS answered_at, max(t.ended_at) FILTER (WHERE t.answered_at IS NOT NULL) AS talk_ended_at,"
    "   bool_or(t.voicemail_left) AS voicemail_left"
    "  FROM attempts t WHERE t.call_id = c.id"
    " ) a ON true"
    " WHERE c.batch_id = %s ORDER BY c.seq"
)


def _select(columns: dict[str, str]) -> str:
    return "SELECT " + ", ".join(f"{expr} AS {name}" for name, expr in columns.items())


# The columns as CSV cells: text ("" for none; JSON columns as JSON text, not parsed by psycopg2).
CSV_SQL = _select({n: f"coalesce(({e})::text, '')" for n, e in _COLUMNS.items()})
# Each call's JSONL line, written by Postgres (json, not jsonb: the keys keep their order).
JSONL_SQL = "SELECT json_build_object(" + ", ".join(f"'{n}', {e}" for n, e in _COLUMNS.items()) + ")::text"


def first_script(db: Database, batch_id: str) -> dict[str, Any] | None:
    with db.transaction() as cur:
        cur.execute("SELECT script FROM calls WHERE batch_id = %s ORDER BY seq LIMIT 1", (batch_id,))
        row = cur.fetchone()
    return None if row is None else dict(row["script"])


def result_chunks(db: Database, batch_id: str, *, as_lines: bool) -> Iterator[list[tuple[Any, ...]]]:
    """The batch's calls in `seq` order, `CHUNK_ROWS` at a time: each row a one-tuple of its
    JSONL line (`as_lines`) or the CSV's columns as text. The connection is held (one
    read-only transaction, one snapshot) until the iterator ends or is closed."""
    sql = (JSONL_SQL if as_lines else CSV_SQL) + _FROM
    with db.connection() as conn:
        try:
            conn.set_session(readonly=True)
            with conn.cursor() as setup:
                # Compiling the query (JIT) would cost a big export more than a quarter-second.
                setup.execute("SET LOCAL jit = off")
            with conn.cursor(name="batch_results") as cur:
                cur.itersize = CHUNK_ROWS
                cur.execute(sql, (batch_id,))
                while rows := cur.fetchmany(CHUNK_ROWS):
                    yield rows
        finally:
            if not conn.closed:
                conn.rollback()
                conn.set_session(readonly=False)
