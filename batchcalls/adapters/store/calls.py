"""Call and attempt transitions in Postgres. Each function is one step of a transaction the
service opens; together they make every call end in exactly one final state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple

from psycopg2.extras import Json, RealDictCursor

from batchcalls.adapters.store.attempts import (
    StartBatchFirst,
    WindowClosed,
    park_call,
    record_attempt,
    set_provider_call_id,
    start_attempt,
    touch_attempt,
    undo_attempt,
)
from batchcalls.adapters.store.batches import FINAL_COUNTERS, end_batch_if_done
from batchcalls.adapters.store.call_reads import (
    attempts_of,
    batches_with_due_retries,
    call_states,
    calls_for_rebuild,
    full_call,
    list_calls,
    list_live,
    load_call,
    queued_calls,
    skipped_calls,
    stale_attempts,
)
from batchcalls.adapters.store.db import execute
from batchcalls.adapters.store.finishing import finish_call
from batchcalls.domain import lifecycle
from batchcalls.domain.call_windows import NO_OFFSET, for_call, stored_window
from batchcalls.domain.lifecycle import Applied as Applied  # the engine and tests read it here
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.retry import RetryPolicy
from batchcalls.domain.states import (
    LIVE_STATUSES,
    AttemptStatus,
    BatchStatus,
    CallStatus,
    Outcome,
)

# With the reads of `call_reads` and the attempt writes of `attempts`, which the engine, API and
# tests read here.
__all__ = [
    "FINAL_COUNTERS",
    "append_responses",
    "Applied",
    "apply_event",
    "apply_events",
    "attempts_of",
    "batches_with_due_retries",
    "call_states",
    "calls_for_rebuild",
    "end_batch_if_done",
    "EventResult",
    "finish_call",
    "full_call",
    "list_calls",
    "list_live",
    "LIVE",
    "load_call",
    "park_call",
    "queued_calls",
    "set_provider_call_id",
    "skipped_calls",
    "stale_attempts",
    "record_attempt",
    "start_attempt",
    "StartBatchFirst",
    "touch_attempt",
    "undo_attempt",
    "WindowClosed",
]

LIVE = LIVE_STATUSES  # the group `apply_events` tests a call's row against


class EventResult(NamedTuple):
    applied: str  # an `Applied` value
    batch: dict[str, Any] | None  # the batch row when the call reached its final state
    call: dict[str, Any] | None  # the call as the event left it (None when ignored)
    # What `lifecycle` decided when the event ended the attempt (a retry or the call's end, and
    # its slot's release), for the engine to carry out in Redis; empty for any other event.
    effects: tuple[lifecycle.Effect, ...] = ()


def apply_event(cur: RealDictCursor, event: ProviderEvent) -> EventResult:
    """Apply one provider event inside the caller's transaction.

    Returns what happened, the batch row when the call ended, the call row as the event left
    it, and the lifecycle's effects when the event ended the attempt."""
    return apply_events(cur, [event])[-1]


_ATTEMPT_FIELDS = ("status", "provider_call_id", "error", "answered_at", "ended_at", "outcome")


def apply_events(
    cur: RealDictCursor, events: list[ProviderEvent], clock_offset: timedelta = NO_OFFSET
) -> list[EventResult]:
    """Apply events of one attempt of one call, in order, inside the caller's transaction, with
    the effect of `apply_event` on each in turn but one read and one write of the attempt (the
    events of a call that came due together). `lifecycle` decides; this loads and writes.
    Returns one result per event."""
    first = events[0]
    if any((e.call_id, e.attempt) != (first.call_id, first.attempt) for e in events):
        raise ValueError("apply_events takes events of one attempt of one call")
    execute(
        cur,
        "SELECT " + ", ".join(f"a.{f} AS attempt_{f}" for f in _ATTEMPT_FIELDS) + ","
        " b.retry_config AS batch_retry_config, b.status AS batch_status, b.callback_url AS batch_callback_url,"
        " b.expires_at AS batch_expires_at, coalesce(c.calling_window, b.calling_window) AS call_window,"
        " a.dialed_at AS attempt_dialed_at, clock_timestamp() AS clock_now, c.*"
        " FROM attempts a JOIN calls c ON c.id = a.call_id JOIN batches b ON b.id = c.batch_id"
        " WHERE a.call_id = %s AND a.number = %s FOR UPDATE OF c, a",
        (first.call_id, first.attempt),
    )
    row = cur.fetchone()
    ignored = EventResult(Applied.IGNORED, None, None)
    if row is None:
        return [ignored] * len(events)
    attempt = lifecycle.Attempt(
        number=first.attempt,
        status=AttemptStatus(row.pop("attempt_status")),
        dialed_at=row.pop("attempt_dialed_at"),
        provider_call_id=row.pop("attempt_provider_call_id"),
        error=row.pop("attempt_error"),
        answered_at=row.pop("attempt_answered_at"),
        ended_at=row.pop("attempt_ended_at"),
        outcome=_outcome(row.pop("attempt_outcome")),
    )
    batch = lifecycle.Batch(
        BatchStatus(row.pop("batch_status")),
        RetryPolicy.from_config(row.pop("batch_retry_config")),
        row.pop("batch_expires_at"),
        for_call(stored_window(row.pop("call_window")), row["phone_number"], clock_offset),
    )
    callback_url, now = row.pop("batch_callback_url"), row.pop("clock_now")
    call = lifecycle.Call(CallStatus(row["status"]), row["attempt_count"])
    step = lifecycle.apply_provider_events(attempt, call, batch, events, now=now)
    if not step.attempt_moved:
        return [ignored] * len(events)
    moved = step.attempt
    execute(
        cur,
        "UPDATE attempts SET status = %s, last_event_at = clock_timestamp(), provider_call_id = %s,"
        " error = %s, answered_at = %s, ended_at = %s, outcome = %s, voicemail_left = voicemail_left OR %s"
        " WHERE call_id = %s AND number = %s RETURNING *",
        (
            moved.status.value,
            moved.provider_call_id,
            moved.error,
            moved.answered_at,
            moved.ended_at,
            moved.outcome.value if moved.outcome else None,
            any(e.voicemail_left for e in events),  # the simulator's machine ending says so
            first.call_id,
            first.attempt,
        ),
    )
    attempt_row = cur.fetchone()
    if step.responses:
        execute(
            cur,
            "UPDATE calls SET responses = responses || %s WHERE id = %s RETURNING responses",
            (Json(list(step.responses)), first.call_id),
        )
        row["responses"] = cur.fetchone()["responses"]
    ended = _write_call_effects(cur, row, step.effects, callback_url, [attempt_row] if first.attempt == 1 else None)
    live = EventResult(Applied.LIVE, None, row)
    return [
        ended if applied in (Applied.SCHEDULED, Applied.FINAL) else live if applied == Applied.LIVE else ignored
        for applied in step.applied
    ]


def _outcome(value: str | None) -> Outcome | None:
    return Outcome(value) if value is not None else None


def _write_call_effects(
    cur: RealDictCursor,
    row: dict[str, Any],
    effects: tuple[lifecycle.Effect, ...],
    callback_url: str | None,
    attempts: list[dict[str, Any]] | None,
) -> EventResult:
    """Write what the events did to the call (`row`, updated in place). `attempts` are the call's
    attempts when the caller has them all. Returns the result of the event that ended the attempt."""
    result = EventResult(Applied.IGNORED, None, None)
    for effect in effects:
        if isinstance(effect, lifecycle.SetCallStatus):
            execute(
                cur,
                "UPDATE calls SET status = %s, updated_at = clock_timestamp() WHERE id = %s",
                (effect.status.value, row["id"]),
            )
            row["status"] = effect.status.value
        elif isinstance(effect, lifecycle.ScheduleRetry):
            execute(
                cur,
                "UPDATE calls SET status = %s, next_attempt_at = %s, last_error = %s,"
                " updated_at = clock_timestamp() WHERE id = %s",
                (effect.status.value, effect.due, effect.error, row["id"]),
            )
            row.update(status=effect.status.value, next_attempt_at=effect.due, last_error=effect.error)
            result = EventResult(Applied.SCHEDULED, None, row, effects)
        elif isinstance(effect, lifecycle.FinishCall):
            batch, final = finish_call(cur, row, effects, callback_url, attempts)
            return EventResult(Applied.FINAL, batch, final, effects)
    return result


def append_responses(cur: RealDictCursor, call_id: str, attempt: int, responses: list[dict[str, Any]]) -> int:
    """Add input results to a call's `responses`, each once: a response whose `id` the call
    already holds (a repeated webhook) is skipped. Stored whatever the call's state, since an
    input result may arrive after the call's end. Returns how many were added."""
    execute(
        cur,
        "SELECT c.responses FROM calls c JOIN attempts a ON a.call_id = c.id AND a.number = %s"
        " WHERE c.id = %s FOR UPDATE OF c",
        (attempt, call_id),
    )
    row = cur.fetchone()
    if row is None:
        return 0
    held = {r.get("id") for r in row["responses"] if isinstance(r, dict)}
    new = [r for r in responses if r.get("id") is None or r["id"] not in held]
    if new:
        execute(
            cur,
            "UPDATE calls SET responses = responses || %s, updated_at = clock_timestamp() WHERE id = %s",
            (Json(new), call_id),
        )
    return len(new)
