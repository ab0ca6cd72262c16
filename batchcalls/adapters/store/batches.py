"""Batches in Postgres: the submit transaction (one batch row, calls by COPY), reads for the API."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2.extras import Json, RealDictCursor

from batchcalls.adapters.store import suppressions
from batchcalls.adapters.store.call_copies import SUPPRESSED, copy_calls
from batchcalls.adapters.store.db import Database, execute
from batchcalls.adapters.store.outbox import add_event
from batchcalls.domain import lifecycle
from batchcalls.domain.errors import IdempotencyConflict, OverCapacity, QuotaExceeded
from batchcalls.domain.models import NewBatch
from batchcalls.domain.payloads import batch_view
from batchcalls.domain.states import ACTIVE_BATCH_STATUSES, BatchStatus, CallStatus, values
from batchcalls.domain.window_spec import to_json

_CAPACITY_LOCK = 0x63617061  # serialises the capacity check of concurrent submits


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(10)


@dataclass(frozen=True)
class Submitted:
    batch_id: str
    created: bool  # False when an Idempotency-Key returned an earlier batch
    # (call id, seq, priority, when its calling window opens: None when open now) to dial; empty
    # when not created
    calls: list[tuple[str, int, int, datetime | None]]
    finished: bool = False  # every call was suppressed (or skipped): the batch ended at once, with its event


FINAL_COUNTERS = {
    CallStatus.COMPLETED: "completed_calls",
    CallStatus.FAILED: "failed_calls",
    CallStatus.CANCELLED: "cancelled_calls",
}


# A streamed batch's calls (a CSV upload), some at a time: a NewBatch of some of its calls with the
# batch's options, and when each of their calling windows opens (`copy_calls`).
Chunk = tuple[NewBatch, Sequence[datetime | None]]


def insert_batch(
    db: Database,
    tenant_id: int,
    batch: NewBatch,
    *,
    idempotency_key: str | None,
    request_hash: str,
    max_queued_calls: int,
    tenant_max_queued_calls: int | None = None,
    openings: Sequence[datetime | None] = (),
    status: BatchStatus = BatchStatus.QUEUED,
    chunks: Iterable[Chunk] | None = None,
) -> Submitted:
    """Store a batch (in `status`: `queued`, or `scheduled` for a later `start_at`) and all its
    calls in one transaction, or return the batch an earlier request with the same
    Idempotency-Key created. Raises QuotaExceeded when the tenant's calls not yet final would
    exceed its quota (its own `max_queued_calls`, else `tenant_max_queued_calls`;
    None: no default quota), then OverCapacity when the calls not yet final, system-wide, would
    exceed `max_queued_calls`. With `chunks` (a streamed upload) the calls come from them, not
    from `batch.calls`, and are not returned: the engine reads them back to queue them. Anything
    `chunks` raises rolls the whole batch back."""
    batch_id = new_batch_id()
    with db.transaction() as cur:
        if idempotency_key is not None:
            existing = _by_idempotency_key(cur, tenant_id, idempotency_key)
            if existing is not None:
                return _replayed(existing, request_hash)
        # The tenant's row lock makes its submits take turns, so two of them cannot both pass a
        # quota that only one fits (the capacity lock below serialises every submit as well,
        # but the quota must not depend on it), and reads the quota as it stands now.
        cur.execute("SELECT max_queued_calls FROM tenants WHERE id = %s FOR NO KEY UPDATE", (tenant_id,))
        own_quota = cur.fetchone()["max_queued_calls"]
        tenant_quota = own_quota if own_quota is not None else tenant_max_queued_calls
        if not _insert_row(cur, batch_id, tenant_id, batch, status, idempotency_key, request_hash):
            existing = _by_idempotency_key(cur, tenant_id, idempotency_key or "")
            assert existing is not None  # a concurrent request with the same key won the race
            return _replayed(existing, request_hash)
        queued: list[tuple[str, int, int, datetime | None]] = []
        total = ended = 0
        for part, part_openings in chunks if chunks is not None else [(batch, openings)]:
            # A skipped call's valid number may be suppressed too: then it ends `suppressed`.
            suppressed = suppressions.suppressed_among(cur, tenant_id, [c.phone_number for c in part.calls])
            ids = copy_calls(cur, batch_id, part, suppressed, part_openings, first_seq=total)
            if chunks is None:
                queued = ids
            total, ended = total + len(part.calls), ended + len(part.calls) - len(ids)
        _check_room(cur, tenant_id, tenant_quota, total, total - ended, max_queued_calls)
        column = FINAL_COUNTERS[SUPPRESSED.status]
        execute(
            cur,
            f"UPDATE batches SET total_calls = %s, {column} = %s WHERE id = %s RETURNING *",  # noqa: S608
            (total, ended, batch_id),
        )
        row = cur.fetchone()
        finished = ended > 0 and end_batch_if_done(cur, row)["finished_at"] is not None
    return Submitted(batch_id, True, queued, finished=finished)


def _insert_row(
    cur: RealDictCursor,
    batch_id: str,
    tenant_id: int,
    batch: NewBatch,
    status: BatchStatus,
    idempotency_key: str | None,
    request_hash: str,
) -> bool:
    """The batch's row, its counts to come; False when a request with the same key stored one."""
    cur.execute(
        "INSERT INTO batches (id, tenant_id, status, concurrency, priority, retry_config, callback_url,"
        " metadata, total_calls, idempotency_key, request_hash, expires_at, calling_window, start_at, voicemail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id",
        (
            batch_id,
            tenant_id,
            status.value,
            batch.concurrency,
            batch.priority,
            Json(batch.retry.to_config()),
            batch.callback_url,
            Json(batch.metadata) if batch.metadata is not None else None,
            idempotency_key,
            request_hash,
            batch.expires_at,
            Json(to_json(batch.calling_window)) if batch.calling_window is not None else None,
            batch.start_at,
            Json(batch.voicemail) if batch.voicemail is not None else None,
        ),
    )
    return cur.fetchone() is not None


def _check_room(
    cur: RealDictCursor, tenant_id: int, tenant_quota: int | None, requested: int, dialable: int, max_queued_calls: int
) -> None:
    """Raise QuotaExceeded or OverCapacity when `dialable` more calls would not fit. Takes the
    capacity lock, held to the commit: concurrent submits check one after another."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_CAPACITY_LOCK,))
    # Counters on the active batches' rows, never a scan of calls; one pass for both sums.
    cur.execute(
        "SELECT coalesce(sum(total_calls - completed_calls - failed_calls - cancelled_calls), 0) AS open,"
        " coalesce(sum(total_calls - completed_calls - failed_calls - cancelled_calls)"
        " FILTER (WHERE tenant_id = %s), 0) AS tenant_open"
        " FROM batches WHERE status = ANY(%s)",
        (tenant_id, values(ACTIVE_BATCH_STATUSES)),
    )
    counts = cur.fetchone()
    open_calls, tenant_open = int(counts["open"]), int(counts["tenant_open"])
    if tenant_quota is not None and tenant_open + dialable > tenant_quota:
        raise QuotaExceeded(
            f"this account has {tenant_open} calls not yet final; accepting {requested} more"
            f" would exceed its quota of {tenant_quota} (max_queued_calls)",
            retry_after=60,
            details={
                "quota": "max_queued_calls",
                "limit": tenant_quota,
                "queued_calls": tenant_open,
                "requested_calls": requested,
            },
        )
    if open_calls + dialable > max_queued_calls:
        raise OverCapacity(
            f"{open_calls} calls are waiting system-wide; accepting {requested} more would exceed {max_queued_calls}",
            retry_after=60,
        )


def _by_idempotency_key(cur: RealDictCursor, tenant_id: int, key: str) -> dict[str, Any] | None:
    cur.execute(
        "SELECT id, request_hash FROM batches WHERE tenant_id = %s AND idempotency_key = %s",
        (tenant_id, key),
    )
    row: dict[str, Any] | None = cur.fetchone()
    return row


def replay_of(cur: RealDictCursor, tenant_id: int, key: str, request_hash: str) -> str | None:
    """The batch an earlier request with this Idempotency-Key created (None: no such request).
    Raises IdempotencyConflict when that request's body was another."""
    existing = _by_idempotency_key(cur, tenant_id, key)
    return None if existing is None else _replayed(existing, request_hash).batch_id


def _replayed(existing: dict[str, Any], request_hash: str) -> Submitted:
    if existing["request_hash"] != request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request body",
            {"batch_id": existing["id"]},
        )
    return Submitted(existing["id"], False, [])


def get_batch(cur: RealDictCursor, batch_id: str, tenant_id: int | None = None) -> dict[str, Any] | None:
    if tenant_id is None:
        execute(cur, "SELECT * FROM batches WHERE id = %s", (batch_id,))
    else:
        execute(cur, "SELECT * FROM batches WHERE id = %s AND tenant_id = %s", (batch_id, tenant_id))
    row: dict[str, Any] | None = cur.fetchone()
    return row


def status_counts(cur: RealDictCursor, batch_id: str) -> dict[str, int]:
    execute(cur, "SELECT status, count(*) AS n FROM calls WHERE batch_id = %s GROUP BY status", (batch_id,))
    return {row["status"]: row["n"] for row in cur.fetchall()}


def list_batches(
    cur: RealDictCursor, tenant_id: int, limit: int, after: tuple[str, str] | None
) -> list[dict[str, Any]]:
    """Newest first; `after` is the (created_at ISO, id) of the last batch of the previous page."""
    if after is None:
        cur.execute(
            "SELECT * FROM batches WHERE tenant_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
            (tenant_id, limit),
        )
    else:
        cur.execute(
            "SELECT * FROM batches WHERE tenant_id = %s AND (created_at, id) < (%s::timestamptz, %s)"
            " ORDER BY created_at DESC, id DESC LIMIT %s",
            (tenant_id, after[0], after[1], limit),
        )
    return list(cur.fetchall())


def active_batches(cur: RealDictCursor) -> list[dict[str, Any]]:
    cur.execute("SELECT * FROM batches WHERE status = ANY(%s)", (values(ACTIVE_BATCH_STATUSES),))
    return list(cur.fetchall())


def end_batch_if_done(cur: RealDictCursor, batch: dict[str, Any]) -> dict[str, Any]:
    """Finish the batch (its status, its terminal event) when its row, just counted under its
    lock, says every call is final, as `lifecycle.on_call_final` says. Returns the batch row."""
    counts = lifecycle.BatchCounts(
        BatchStatus(batch["status"]),
        batch["total_calls"],
        batch["completed_calls"],
        batch["failed_calls"],
        batch["cancelled_calls"],
    )
    for effect in lifecycle.on_call_final(counts):
        if isinstance(effect, lifecycle.FinishBatch):
            execute(
                cur,
                "UPDATE batches SET status = %s, finished_at = clock_timestamp(),"
                " started_at = coalesce(started_at, clock_timestamp()) WHERE id = %s RETURNING *",
                (effect.status.value, batch["id"]),
            )
            batch = cur.fetchone()
        elif isinstance(effect, lifecycle.WriteEvent):
            add_event(cur, effect.type, batch["id"], batch_view(batch, status_counts(cur, batch["id"])))
    return batch


def expiring_batches(cur: RealDictCursor, within_seconds: float) -> list[tuple[str, float]]:
    """Active batches whose `expires_at` comes within `within_seconds` or has passed, each with
    the seconds until it (<= 0: due), by the database's clock."""
    cur.execute(
        "SELECT id, extract(epoch FROM expires_at - clock_timestamp())::float8 AS due_in FROM batches"
        " WHERE expires_at IS NOT NULL AND finished_at IS NULL AND status = ANY(%s)"
        " AND expires_at <= clock_timestamp() + make_interval(secs => %s)",
        (values(ACTIVE_BATCH_STATUSES), within_seconds),
    )
    return [(row["id"], float(row["due_in"])) for row in cur.fetchall()]


def starting_batches(cur: RealDictCursor, within_seconds: float) -> list[tuple[str, float]]:
    """Scheduled batches whose `start_at` comes within `within_seconds` or has passed, each with
    the seconds until it (<= 0: due), by the database's clock."""
    cur.execute(
        "SELECT id, extract(epoch FROM start_at - clock_timestamp())::float8 AS due_in FROM batches"
        " WHERE start_at IS NOT NULL AND started_at IS NULL AND status = %s"
        " AND start_at <= clock_timestamp() + make_interval(secs => %s)",
        (BatchStatus.SCHEDULED.value, within_seconds),
    )
    return [(row["id"], float(row["due_in"])) for row in cur.fetchall()]
