"""Call and attempt transitions in Postgres. Each function is one step of a transaction the
service opens; together they make every call end in exactly one final state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from psycopg2.extras import Json, RealDictCursor

from batchcalls.events import EventType
from batchcalls.models import ProviderEvent
from batchcalls.retry import RetryPolicy
from batchcalls.states import (
    ACTIVE_BATCH_STATUSES,
    ATTEMPT_TO_CALL_STATUS,
    DIALING_BATCH_STATUSES,
    LIVE_STATUSES,
    PENDING_STATUSES,
    UNFINISHED_STATUSES,
    AttemptStatus,
    BatchStatus,
    CallStatus,
    Outcome,
    attempt_may_move,
    batch_final_status,
    final_status,
    values,
)
from batchcalls.store import batches
from batchcalls.store.db import execute
from batchcalls.store.outbox import add_event
from batchcalls.views import batch_view, call_view

LIVE = LIVE_STATUSES  # the group `apply_events` tests a call's row against


def load_call(cur: RealDictCursor, call_id: str, lock: bool = False) -> dict[str, Any] | None:
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


def start_attempt(
    cur: RealDictCursor, call_id: str, provider: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Record a new attempt as `dialing` before the provider is asked, so that a redelivered task
    never dials it again. Returns the call row with its new `attempt_count` (None when the call
    is not waiting to be dialed: already live, final, or its batch is not running), and the batch
    row when this attempt started the batch."""
    # One statement: the call moves to dialing and its attempt is written (a data-modifying CTE).
    execute(
        cur, "WITH c AS (UPDATE calls c SET status = %s, attempt_count = attempt_count + 1,"
        " next_attempt_at = NULL, updated_at = clock_timestamp()"
        " FROM batches b WHERE c.id = %s AND b.id = c.batch_id AND c.status = ANY(%s)"
        " AND b.status = ANY(%s)"
        " RETURNING c.*, b.status AS batch_status),"
        " a AS (INSERT INTO attempts (call_id, number, status, provider, dialed_at, last_event_at)"
        " SELECT id, attempt_count, %s, %s, clock_timestamp(), clock_timestamp() FROM c)"
        " SELECT * FROM c",
        (CallStatus.DIALING.value, call_id, values(PENDING_STATUSES), values(DIALING_BATCH_STATUSES),
         AttemptStatus.DIALING.value, provider),
    )
    call = cur.fetchone()
    if call is None:
        return None, None
    batch = None
    if call.pop("batch_status") == BatchStatus.QUEUED:  # this may be the batch's first attempt
        execute(
            cur, "UPDATE batches SET status = %s, started_at = clock_timestamp()"
            " WHERE id = %s AND status = %s RETURNING *",
            (BatchStatus.RUNNING.value, call["batch_id"], BatchStatus.QUEUED.value),
        )
        batch = cur.fetchone()
    if batch is not None:
        add_event(cur, EventType.BATCH_STARTED, batch["id"], batch_view(batch, batches.status_counts(cur, batch["id"])))
    return call, batch


def set_provider_call_id(cur: RealDictCursor, call_id: str, attempt: int, provider_call_id: str) -> None:
    execute(
        cur, "UPDATE attempts SET provider_call_id = coalesce(provider_call_id, %s)"
        " WHERE call_id = %s AND number = %s",
        (provider_call_id, call_id, attempt),
    )


def undo_attempt(cur: RealDictCursor, call_id: str, attempt: int) -> bool:
    """Take back an attempt the provider certainly did not place (throttled): the call waits again."""
    # The call's row first, then its attempt's: the order `apply_events` locks them in. The other
    # order deadlocked against a provider event for the same attempt (test_store_concurrency).
    execute(cur, "SELECT 1 FROM calls WHERE id = %s FOR UPDATE", (call_id,))
    execute(
        cur, "DELETE FROM attempts WHERE call_id = %s AND number = %s AND status = %s"
        " AND provider_call_id IS NULL RETURNING number",
        (call_id, attempt, AttemptStatus.DIALING.value),
    )
    if cur.fetchone() is None:
        return False
    execute(
        cur, "UPDATE calls SET status = %s, attempt_count = attempt_count - 1,"
        " updated_at = clock_timestamp() WHERE id = %s AND attempt_count = %s",
        (CallStatus.QUEUED.value, call_id, attempt),
    )
    return True


class Applied:
    """What applying a provider event did."""

    IGNORED = "ignored"  # repeated, out of order, or for an unknown attempt
    LIVE = "live"  # the attempt moved forward and the call is still live
    SCHEDULED = "scheduled"  # the attempt ended and the call waits for a retry
    FINAL = "final"  # the call reached its final state


class EventResult(NamedTuple):
    applied: str  # an `Applied` value
    batch: dict[str, Any] | None  # the batch row when the call reached its final state
    due: datetime | None  # when a retry is due
    call: dict[str, Any] | None  # the call as the event left it (None when ignored)


def apply_event(cur: RealDictCursor, event: ProviderEvent) -> EventResult:
    """Apply one provider event inside the caller's transaction.

    Returns what happened, the batch row when the call ended, the due time of a retry, and the
    call row as the event left it."""
    return apply_events(cur, [event])[-1]


_ATTEMPT_FIELDS = ("status", "provider_call_id", "error", "answered_at", "ended_at", "outcome")


def apply_events(cur: RealDictCursor, events: list[ProviderEvent]) -> list[EventResult]:
    """Apply events of one attempt of one call, in order, inside the caller's transaction, with
    the effect of `apply_event` on each in turn but one read and one write of the attempt (the
    events of a call that came due together). Returns one result per event."""
    first = events[0]
    if any((e.call_id, e.attempt) != (first.call_id, first.attempt) for e in events):
        raise ValueError("apply_events takes events of one attempt of one call")
    execute(
        cur, "SELECT " + ", ".join(f"a.{f} AS attempt_{f}" for f in _ATTEMPT_FIELDS) + ","
        " b.retry_config AS batch_retry_config, b.status AS batch_status, b.callback_url AS batch_callback_url,"
        " a.dialed_at AS attempt_dialed_at, clock_timestamp() AS clock_now, c.*"
        " FROM attempts a JOIN calls c ON c.id = a.call_id JOIN batches b ON b.id = c.batch_id"
        " WHERE a.call_id = %s AND a.number = %s FOR UPDATE OF c, a",
        (first.call_id, first.attempt),
    )
    row = cur.fetchone()
    ignored = EventResult(Applied.IGNORED, None, None, None)
    if row is None:
        return [ignored] * len(events)
    attempt = {f: row.pop(f"attempt_{f}") for f in _ATTEMPT_FIELDS}
    retry_config, batch_status = row.pop("batch_retry_config"), row.pop("batch_status")
    callback_url = row.pop("batch_callback_url")
    dialed_at, clock_now = row.pop("attempt_dialed_at"), row.pop("clock_now")
    # Replay the events on the rows in memory, as one statement per event would have done.
    results: list[EventResult | None] = []
    moved = call_moved = False
    responses: list[dict[str, Any]] = []
    ended: ProviderEvent | None = None
    for event in events:
        foreign = (attempt["provider_call_id"] is not None and event.provider_call_id is not None
                   and event.provider_call_id != attempt["provider_call_id"])
        if foreign or not attempt_may_move(AttemptStatus(attempt["status"]), event.status):
            # `foreign`: an event about another provider call, replayed against this attempt's URL.
            results.append(ignored)
            continue
        # A provider's time feeds the retry schedule (a retry is due after `ended_at`): it is
        # kept between the dial and now, so no event can make a retry due at once or never.
        at = min(max(datetime.fromtimestamp(event.at, tz=UTC), dialed_at), clock_now)
        moved = True
        attempt["status"] = event.status.value
        attempt["provider_call_id"] = attempt["provider_call_id"] or event.provider_call_id
        attempt["error"] = event.error if event.error is not None else attempt["error"]
        if event.status is AttemptStatus.ANSWERED:
            attempt["answered_at"] = attempt["answered_at"] or at
        if event.status is AttemptStatus.ENDED:
            attempt["ended_at"] = at
        attempt["outcome"] = event.outcome.value if event.outcome else None
        responses += event.responses or []
        current = row["attempt_count"] == event.attempt and row["status"] in LIVE
        if event.status is not AttemptStatus.ENDED:
            if current:
                row["status"] = ATTEMPT_TO_CALL_STATUS[event.status].value
                call_moved = True
            results.append(EventResult(Applied.LIVE, None, None, row))
        elif current:
            ended = event
            results.append(None)  # decided below
        else:
            results.append(ignored)
    if not moved:
        return results  # type: ignore[return-value]  # every one ignored
    execute(
        cur, "UPDATE attempts SET status = %s, last_event_at = clock_timestamp(), provider_call_id = %s,"
        " error = %s, answered_at = %s, ended_at = %s, outcome = %s"
        " WHERE call_id = %s AND number = %s RETURNING *",
        (*(attempt[f] for f in _ATTEMPT_FIELDS), first.call_id, first.attempt),
    )
    attempt_row = cur.fetchone()
    if responses:
        execute(
            cur, "UPDATE calls SET responses = responses || %s WHERE id = %s RETURNING responses",
            (Json(responses), first.call_id),
        )
        row["responses"] = cur.fetchone()["responses"]
    if ended is None:
        if call_moved:
            execute(
                cur, "UPDATE calls SET status = %s, updated_at = clock_timestamp() WHERE id = %s",
                (row["status"], first.call_id),
            )
        return results  # type: ignore[return-value]  # none undecided
    index = results.index(None)
    assert ended.outcome is not None
    ended_at = attempt["ended_at"]
    delay = RetryPolicy.from_config(retry_config).next_delay(ended.outcome, ended.attempt)
    if delay is not None and batch_status in ("queued", "running"):
        due = ended_at + timedelta(seconds=delay)
        execute(
            cur, "UPDATE calls SET status = 'scheduled', next_attempt_at = %s, last_error = %s,"
            " updated_at = clock_timestamp() WHERE id = %s",
            (due, ended.error, first.call_id),
        )
        row.update(status=CallStatus.SCHEDULED.value, next_attempt_at=due, last_error=ended.error)
        results[index] = EventResult(Applied.SCHEDULED, None, due, row)
    else:
        # The attempt just updated is the call's only one on a first attempt: no need to read them.
        attempts = [attempt_row] if ended.attempt == 1 else None
        batch, final = finish_call(cur, row, ended.outcome, ended.error, callback_url, attempts)
        results[index] = EventResult(Applied.FINAL, batch, None, final)
    return results  # type: ignore[return-value]  # all decided


def append_responses(cur: RealDictCursor, call_id: str, attempt: int, responses: list[dict[str, Any]]) -> int:
    """Add input results to a call's `responses`, each once: a response whose `id` the call
    already holds (a repeated webhook) is skipped. Stored whatever the call's state, since an
    input result may arrive after the call's end. Returns how many were added."""
    execute(
        cur, "SELECT c.responses FROM calls c JOIN attempts a ON a.call_id = c.id AND a.number = %s"
        " WHERE c.id = %s FOR UPDATE OF c",
        (attempt, call_id),
    )
    row = cur.fetchone()
    if row is None:
        return 0
    held = {r.get("id") for r in row["responses"] if isinstance(r, dict)}
    new = [r for r in responses if r.get("id") is None or r["id"] not in held]
    if new:
        execute(cur, "UPDATE calls SET responses = responses || %s, updated_at = clock_timestamp()"
                    " WHERE id = %s", (Json(new), call_id))
    return len(new)


def finish_call(
    cur: RealDictCursor, call: dict[str, Any], outcome: Outcome, error: str | None, callback_url: str | None,
    attempts: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Move a call to its final state, write its event, count it on its batch, and finish the
    batch when this was its last call. The caller holds the call's row lock and has read the
    batch's `callback_url`; `attempts` are the call's attempts when the caller has them all.
    Returns the batch row and the call row."""
    status = final_status(outcome)
    execute(
        cur, "UPDATE calls SET status = %s, outcome = %s, last_error = coalesce(%s, last_error),"
        " next_attempt_at = NULL, updated_at = clock_timestamp() WHERE id = %s"
        " RETURNING *, clock_timestamp() AS event_time",
        (status.value, outcome.value, error, call["id"]),
    )
    final = cur.fetchone()
    event_time = final.pop("event_time")
    event_type = {CallStatus.COMPLETED: EventType.CALL_COMPLETED,
                  CallStatus.FAILED: EventType.CALL_FAILED}.get(status)
    if event_type is not None:
        data = full_call(cur, final) if attempts is None else call_view(final, attempts)
        add_event(cur, event_type, call["batch_id"], data, known=(event_time, callback_url))
    # The batch's row last: every call of the batch that ends takes its lock, and holds it until
    # it commits. Taken first, it was held through the event's payload and insert as well, and
    # calls ending together queued behind it (the engine's throughput limit).
    column = {CallStatus.COMPLETED: "completed_calls", CallStatus.FAILED: "failed_calls",
              CallStatus.CANCELLED: "cancelled_calls"}[status]
    execute(cur, f"UPDATE batches SET {column} = {column} + 1 WHERE id = %s RETURNING *",  # noqa: S608
            (call["batch_id"],))
    batch = cur.fetchone()
    done = batch["completed_calls"] + batch["failed_calls"] + batch["cancelled_calls"]
    if done == batch["total_calls"] and batch["status"] in ACTIVE_BATCH_STATUSES:
        end_status = (BatchStatus.CANCELLED if batch["status"] == BatchStatus.CANCELLED
                      else batch_final_status(batch["completed_calls"]))
        execute(
            cur, "UPDATE batches SET status = %s, finished_at = clock_timestamp(),"
            " started_at = coalesce(started_at, clock_timestamp()) WHERE id = %s RETURNING *",
            (end_status.value, batch["id"]),
        )
        batch = cur.fetchone()
        terminal = EventType.BATCH_COMPLETED if end_status is BatchStatus.COMPLETED else EventType.BATCH_FAILED
        add_event(cur, terminal, batch["id"], batch_view(batch, batches.status_counts(cur, batch["id"])))
    return batch, final


def list_calls(
    cur: RealDictCursor, batch_id: str, limit: int, after_seq: int, status: str | None
) -> list[dict[str, Any]]:
    if status is None:
        execute(
            cur, "SELECT * FROM calls WHERE batch_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (batch_id, after_seq, limit),
        )
    else:
        execute(
            cur, "SELECT * FROM calls WHERE batch_id = %s AND status = %s AND seq > %s ORDER BY seq LIMIT %s",
            (batch_id, status, after_seq, limit),
        )
    return list(cur.fetchall())


def calls_for_rebuild(cur: RealDictCursor, batch_id: str) -> list[dict[str, Any]]:
    execute(
        cur, "SELECT id, seq, priority, status, next_attempt_at FROM calls WHERE batch_id = %s"
        " AND status = ANY(%s)",
        (batch_id, values(UNFINISHED_STATUSES)),
    )
    return list(cur.fetchall())


def call_states(cur: RealDictCursor, call_ids: list[str]) -> dict[str, str]:
    execute(cur, "SELECT id, status FROM calls WHERE id = ANY(%s)", (call_ids,))
    return {row["id"]: row["status"] for row in cur.fetchall()}


def stale_attempts(cur: RealDictCursor, older_than: float, limit: int = 500) -> list[dict[str, Any]]:
    """Live attempts that have heard nothing from the provider for `older_than` seconds."""
    execute(
        cur, "SELECT a.*, c.phone_number, c.batch_id FROM attempts a JOIN calls c ON c.id = a.call_id"
        " WHERE a.status <> %s AND a.last_event_at < clock_timestamp() - %s::interval"
        " ORDER BY a.last_event_at LIMIT %s",
        (AttemptStatus.ENDED.value, timedelta(seconds=older_than), limit),
    )
    return list(cur.fetchall())


def touch_attempt(cur: RealDictCursor, call_id: str, attempt: int) -> None:
    execute(
        cur, "UPDATE attempts SET last_event_at = clock_timestamp() WHERE call_id = %s AND number = %s",
        (call_id, attempt),
    )


def batches_with_due_retries(cur: RealDictCursor) -> list[str]:
    execute(
        cur, "SELECT DISTINCT batch_id FROM calls WHERE status = %s AND next_attempt_at <= clock_timestamp()",
        (CallStatus.SCHEDULED.value,),
    )
    return [row["batch_id"] for row in cur.fetchall()]


def list_live(cur: RealDictCursor, batch_id: str) -> list[dict[str, Any]]:
    execute(cur, "SELECT id FROM calls WHERE batch_id = %s AND status = ANY(%s)", (batch_id, values(LIVE_STATUSES)))
    return list(cur.fetchall())
