"""Contact limits in Postgres: a tenant's dials to each number, counted over a rolling day.

Only tenants with a limit (`tenants.max_dials_per_number`) log dials. A dial is logged in the
transaction that records its attempt, under an advisory lock on (tenant, number), so two calls to
one number dialing at once count each other: neither can pass a limit only one fits. An attempt
taken back later (a throttled create) keeps its row: the count errs toward calling less.
"""

from __future__ import annotations

from datetime import datetime

from psycopg2.extras import RealDictCursor

from batchcalls.adapters.store.db import execute

WINDOW = "1 day"


def reserve_dial(cur: RealDictCursor, tenant_id: int, phone_number: str, limit: int) -> datetime | None:
    """Log a dial to `phone_number` now, when the tenant's dials to it in the last day are fewer
    than `limit`; else log nothing and return when the oldest of those that count leaves the day
    (when the number may be dialed again)."""
    execute(cur, "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"contact:{tenant_id}:{phone_number}",))
    execute(
        cur,
        "SELECT dialed_at + interval '1 day' AS free_at FROM contact_dials"
        " WHERE tenant_id = %s AND phone_number = %s AND dialed_at > clock_timestamp() - interval '1 day'"
        " ORDER BY dialed_at DESC OFFSET %s LIMIT 1",
        (tenant_id, phone_number, limit - 1),
    )
    row = cur.fetchone()
    if row is not None:
        free_at: datetime = row["free_at"]
        return free_at
    execute(
        cur,
        "INSERT INTO contact_dials (tenant_id, phone_number, dialed_at) VALUES (%s, %s, clock_timestamp())",
        (tenant_id, phone_number),
    )
    return None


def forget_old_dials(cur: RealDictCursor) -> int:
    """Delete the dials no limit counts any more (older than a day). Returns how many."""
    execute(cur, "DELETE FROM contact_dials WHERE dialed_at <= clock_timestamp() - interval '1 day'")
    return int(cur.rowcount)
