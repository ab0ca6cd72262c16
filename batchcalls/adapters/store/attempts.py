"""Dialing an attempt in Postgres: recorded as `dialing` before the provider is asked, given the
provider's id, taken back when the provider certainly did not place it, and kept fresh."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg2.extras import RealDictCursor

from batchcalls.adapters.store import batches, contacts
from batchcalls.adapters.store.db import Database, execute
from batchcalls.adapters.store.finishing import finish_call
from batchcalls.adapters.store.outbox import add_event
from batchcalls.domain import lifecycle
from batchcalls.domain.events import EventType
from batchcalls.domain.payloads import batch_view
from batchcalls.domain.states import (
    DIALING_BATCH_STATUSES,
    PENDING_STATUSES,
    AttemptStatus,
    BatchStatus,
    CallStatus,
    values,
)


class StartBatchFirst(Exception):
    """The batch has not started: roll back, and start the attempt again with `start_batch`."""


class Suppressed(Exception):
    """The call's number is suppressed for its tenant: roll back, and end it with `end_suppressed`."""


class WindowClosed(Exception):
    """The call's calling window is closed, or its number's contact limit reached: roll back, and
    park it until `opening` (`park_call`)."""

    def __init__(self, call_id: str, opening: datetime) -> None:
        super().__init__(call_id)
        self.opening = opening


# A call's stored row (its `calling_window`, and its batch's as `batch_calling_window`) -> when its
# window opens, when it is closed now (None: it may be dialed).
ClosedUntil = Callable[[dict[str, Any]], datetime | None]


def start_attempt(
    cur: RealDictCursor,
    call_id: str,
    provider: str,
    *,
    start_batch: bool = False,
    closed_until: ClosedUntil | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Record a new attempt as `dialing` before the provider is asked, so that a redelivered task
    never dials it again. Returns the call row with its new `attempt_count` (None when the call
    is not waiting to be dialed: already live, final, or its batch is not dialing or has passed
    its `expires_at`), and the batch row when this attempt started the batch.

    The batch's status is read under a share lock on its row, which a pause or cancel (holding
    the row's update lock) waits for and makes this wait for: an attempt is recorded before a
    pause or cancel answers, or not at all. Raises `StartBatchFirst` (the caller rolls back)
    when the batch has not started: a batch is started with its row's update lock taken before
    the share lock, with `start_batch` (two attempts holding the share lock and both upgrading
    it to start the batch would deadlock). Raises `WindowClosed` when `closed_until` says the
    call's calling window is closed."""
    batch = _start_batch(cur, call_id) if start_batch else None
    # One statement: the batch's status checked under its share lock, the waiting call locked and
    # its number looked up in the tenant's suppressions (a probe of their primary key), and, when
    # it is not suppressed, the call moved to dialing and its attempt written (data-modifying CTEs).
    execute(
        cur,
        "WITH b AS (SELECT x.id, x.status, x.tenant_id, x.calling_window, x.voicemail, t.max_dials_per_number"
        " FROM batches x JOIN tenants t ON t.id = x.tenant_id"
        " WHERE x.id = (SELECT batch_id FROM calls WHERE id = %s) AND x.status = ANY(%s)"
        " AND (x.expires_at IS NULL OR x.expires_at > clock_timestamp()) FOR SHARE OF x),"
        " w AS (SELECT c.id, EXISTS (SELECT 1 FROM suppressions s WHERE s.tenant_id = b.tenant_id"
        " AND s.phone_number = c.phone_number) AS suppressed"
        " FROM calls c JOIN b ON b.id = c.batch_id WHERE c.id = %s AND c.status = ANY(%s) FOR UPDATE OF c),"
        " c AS (UPDATE calls c SET status = %s, attempt_count = attempt_count + 1,"
        " next_attempt_at = NULL, updated_at = clock_timestamp()"
        " FROM w, b WHERE c.id = w.id AND NOT w.suppressed AND b.status <> %s AND c.status = ANY(%s)"
        " RETURNING c.*),"
        " a AS (INSERT INTO attempts (call_id, number, status, provider, dialed_at, last_event_at)"
        " SELECT id, attempt_count, %s, %s, clock_timestamp(), clock_timestamp() FROM c)"
        " SELECT c.*, b.status AS batch_status, w.suppressed AS number_suppressed,"
        " b.calling_window AS batch_calling_window, b.voicemail AS batch_voicemail, b.tenant_id AS batch_tenant_id,"
        " b.max_dials_per_number AS tenant_max_dials FROM w, b LEFT JOIN c ON true",
        (
            call_id,
            values(DIALING_BATCH_STATUSES),
            call_id,
            values(PENDING_STATUSES),
            CallStatus.DIALING.value,
            BatchStatus.QUEUED.value,
            values(PENDING_STATUSES),
            AttemptStatus.DIALING.value,
            provider,
        ),
    )
    call = cur.fetchone()
    if call is None:
        return None, None
    if call.pop("batch_status") == BatchStatus.QUEUED:
        raise StartBatchFirst(call_id)
    if call.pop("number_suppressed"):
        raise Suppressed(call_id)
    if call["id"] is None:
        return None, None
    if closed_until is not None and (opening := closed_until(call)) is not None:
        raise WindowClosed(call_id, opening)
    tenant_id, limit = call.pop("batch_tenant_id"), call.pop("tenant_max_dials")
    if limit is not None and (free_at := contacts.reserve_dial(cur, tenant_id, call["phone_number"], limit)):
        raise WindowClosed(call_id, free_at)  # its number's dials of the day are used up
    call.pop("batch_calling_window")
    batch_voicemail = call.pop("batch_voicemail")
    if call.get("voicemail") is None:
        call["voicemail"] = batch_voicemail  # the call's own replaces its batch's
    if batch is not None:
        add_event(cur, EventType.BATCH_STARTED, batch["id"], batch_view(batch, batches.status_counts(cur, batch["id"])))
    return call, batch


def record_attempt(
    db: Database, call_id: str, provider: str, closed_until: ClosedUntil | None = None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """`start_attempt` in a transaction of its own, starting the batch first (in a second
    transaction) when it has not started. A call whose number is suppressed is not dialed but
    ended (`end_suppressed`, in a transaction of its own): then the answer is None and its batch's
    row after counting it. Raises `WindowClosed` (nothing recorded) for a call outside its window."""
    start_batch = False
    while True:  # again only if the batch went back to `queued` (resumed before it started)
        try:
            with db.transaction() as cur:
                return start_attempt(cur, call_id, provider, start_batch=start_batch, closed_until=closed_until)
        except StartBatchFirst:
            start_batch = True
        except Suppressed:
            with db.transaction() as cur:
                return None, end_suppressed(cur, call_id)


def end_suppressed(cur: RealDictCursor, call_id: str) -> dict[str, Any] | None:
    """End a waiting call whose number is suppressed by `lifecycle.Trigger.SUPPRESS`, starting
    its batch first when no call has started it. Returns the batch row when the call ended here.

    Locks as the end of a call by a provider event does: the call's row, then the batch's (not
    the batch's share lock first: two ends holding it could not both take its update lock)."""
    started = _start_batch(cur, call_id)
    execute(
        cur,
        "SELECT c.*, b.callback_url AS batch_callback_url FROM calls c JOIN batches b ON b.id = c.batch_id"
        " WHERE c.id = %s AND EXISTS (SELECT 1 FROM suppressions s WHERE s.tenant_id = b.tenant_id"
        " AND s.phone_number = c.phone_number) FOR UPDATE OF c",
        (call_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    callback_url = row.pop("batch_callback_url")
    _, effects = lifecycle.call_move(
        lifecycle.Call(CallStatus(row["status"]), row["attempt_count"]), lifecycle.Trigger.SUPPRESS, None, None
    )
    if not any(isinstance(e, lifecycle.FinishCall) for e in effects):
        return None
    if started is not None:
        add_event(
            cur, EventType.BATCH_STARTED, started["id"], batch_view(started, batches.status_counts(cur, started["id"]))
        )
    return finish_call(cur, row, effects, callback_url)[0]


def _start_batch(cur: RealDictCursor, call_id: str) -> dict[str, Any] | None:
    """Start the call's batch when it is `queued`, under its row's update lock; its row if so."""
    execute(
        cur,
        "UPDATE batches SET status = %s, started_at = clock_timestamp()"
        " WHERE id = (SELECT batch_id FROM calls WHERE id = %s) AND status = %s RETURNING *",
        (BatchStatus.RUNNING.value, call_id, BatchStatus.QUEUED.value),
    )
    row: dict[str, Any] | None = cur.fetchone()
    return row


def park_call(cur: RealDictCursor, call_id: str, opening: datetime) -> bool:
    """A waiting call outside its calling window waits `scheduled` until `opening`, by the
    `WINDOW_CLOSED` trigger. False when it is no longer waiting."""
    execute(cur, "SELECT status, attempt_count FROM calls WHERE id = %s FOR UPDATE", (call_id,))
    row = cur.fetchone()
    if row is None:
        return False
    call = lifecycle.Call(CallStatus(row["status"]), row["attempt_count"])
    moved, effects = lifecycle.call_move(call, lifecycle.Trigger.WINDOW_CLOSED, None, None)
    if not effects:
        return False
    execute(
        cur,
        "UPDATE calls SET status = %s, next_attempt_at = %s, updated_at = clock_timestamp() WHERE id = %s",
        (moved.status.value, opening, call_id),
    )
    return True


def set_provider_call_id(cur: RealDictCursor, call_id: str, attempt: int, provider_call_id: str) -> None:
    execute(
        cur,
        "UPDATE attempts SET provider_call_id = coalesce(provider_call_id, %s) WHERE call_id = %s AND number = %s",
        (provider_call_id, call_id, attempt),
    )


def undo_attempt(cur: RealDictCursor, call_id: str, attempt: int) -> bool:
    """Take back an attempt the provider certainly did not place (throttled): the call waits again."""
    # The call's row first, then its attempt's: the order `apply_events` locks them in. The other
    # order deadlocked against a provider event for the same attempt (test_store_concurrency).
    execute(cur, "SELECT 1 FROM calls WHERE id = %s FOR UPDATE", (call_id,))
    execute(
        cur,
        "DELETE FROM attempts WHERE call_id = %s AND number = %s AND status = %s"
        " AND provider_call_id IS NULL RETURNING number",
        (call_id, attempt, AttemptStatus.DIALING.value),
    )
    if cur.fetchone() is None:
        return False
    execute(
        cur,
        "UPDATE calls SET status = %s, attempt_count = attempt_count - 1,"
        " updated_at = clock_timestamp() WHERE id = %s AND attempt_count = %s",
        (CallStatus.QUEUED.value, call_id, attempt),
    )
    return True


def touch_attempt(cur: RealDictCursor, call_id: str, attempt: int) -> None:
    execute(
        cur,
        "UPDATE attempts SET last_event_at = clock_timestamp() WHERE call_id = %s AND number = %s",
        (call_id, attempt),
    )


def mark_voicemail_left(cur: RealDictCursor, call_id: str, attempt: int, provider_call_id: str) -> bool:
    """Record that the provider left the call's voicemail message in this attempt's call (which
    may have ended already: Vonage reports the machine, then its beep). False when the attempt
    is not that provider call's."""
    execute(
        cur,
        "UPDATE attempts SET voicemail_left = true WHERE call_id = %s AND number = %s"
        " AND coalesce(provider_call_id, %s) = %s RETURNING number",
        (call_id, attempt, provider_call_id, provider_call_id),
    )
    return cur.fetchone() is not None


def voicemail_of(cur: RealDictCursor, call_id: str, attempt: int) -> tuple[dict[str, Any] | None, str | None, bool]:
    """The call's voicemail (its own, else its batch's), its voice, and whether the attempt has
    left the message already; None and False for an unknown attempt."""
    execute(
        cur,
        "SELECT coalesce(c.voicemail, b.voicemail) AS voicemail, c.voice_id, a.voicemail_left"
        " FROM attempts a JOIN calls c ON c.id = a.call_id JOIN batches b ON b.id = c.batch_id"
        " WHERE a.call_id = %s AND a.number = %s",
        (call_id, attempt),
    )
    row = cur.fetchone()
    if row is None:
        return None, None, False
    return row["voicemail"], row["voice_id"], bool(row["voicemail_left"])
