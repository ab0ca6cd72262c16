"""The life of a call, its attempts and its batch: the rules as tables, applied by pure functions.

No I/O. The store loads rows into the small states below, calls a function of this module, and
writes what it returns (the new state and a tuple of effects); it decides nothing itself. Three tables hold the rules:
- `ATTEMPT_MOVES`: (attempt status, status a provider event reports) -> the attempt's new status.
  A pair that is not a row is a no-op: a repeated or out-of-order event changes nothing.
- `CALL_MOVES`: (call status, trigger) -> the call's new status; or an `Outcome`, with which the
  call ends (its final status, event and counter follow from it); or `END_OF_ATTEMPT` when the
  outcome of the ended attempt, the batch's `RetryPolicy` and the batch's state decide between a
  final status and a retry scheduled at `ended_at + delay`. A trigger is something that happens to
  the call (its attempt reaching a status, a command, its number suppressed). A pair that is not a
  row changes nothing.
- `BATCH_ON_LAST_CALL`: batch status -> how the batch ends when its last call becomes final. A batch
  status that is not a row does not end there.
- `commands.BATCH_MOVES`: (batch status, command: pause, resume, cancel, start, expire) -> the
  batch's new status; a pair that is not a row is refused. The calls a command ends move by the
  `CALL_MOVES` rows of its trigger (`CANCEL`, `HANG_UP`, `EXPIRE`).

A new state is a status in `states`, a `Trigger` or `Command` member and rows: `call_move` and
`batch_command` turn rows into effects the store writes. The unit tests walk the tables. The
states read and the effects returned are plain dataclasses of `lifecycle_data`, exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from batchcalls.domain.batch_end import BATCH_EVENT_OF, BATCH_ON_LAST_CALL, BatchEnd, on_call_final
from batchcalls.domain.events import EventType
from batchcalls.domain.lifecycle_data import (
    Applied,
    Attempt,
    Batch,
    BatchCounts,
    Call,
    Effect,
    FinishBatch,
    FinishCall,
    Payload,
    ReleaseSlot,
    ScheduleRetry,
    SetCallStatus,
    Step,
    WriteEvent,
)
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import (
    LIVE_STATUSES,
    AttemptStatus,
    BatchStatus,
    CallStatus,
    Outcome,
    final_status,
)

# fmt: off
__all__ = [
    "ATTEMPT_MOVES", "Applied", "Attempt", "BATCH_EVENT_OF", "BATCH_ON_LAST_CALL", "Batch", "BatchCounts", "BatchEnd",
    "CALL_EVENT_OF", "CALL_MOVES", "Call", "CallRule", "END_OF_ATTEMPT", "Effect", "FinishBatch", "FinishCall",
    "Payload", "RETRY_WHILE_BATCH", "ReleaseSlot", "Resolve", "ScheduleRetry", "SetCallStatus", "Step",
    "TRIGGER_OF_ATTEMPT", "Trigger", "WriteEvent", "apply_provider_events", "attempt_move", "call_move",
    "end_of_attempt", "finish", "on_call_final",
]
# fmt: on

A = AttemptStatus
C = CallStatus
B = BatchStatus

ATTEMPT_MOVES: dict[tuple[AttemptStatus, AttemptStatus], AttemptStatus] = {
    # Forward only, skipping allowed; `ended` is terminal.
    (A.DIALING, A.RINGING): A.RINGING,
    (A.DIALING, A.ANSWERED): A.ANSWERED,
    (A.DIALING, A.ENDED): A.ENDED,
    (A.RINGING, A.ANSWERED): A.ANSWERED,
    (A.RINGING, A.ENDED): A.ENDED,
    (A.ANSWERED, A.ENDED): A.ENDED,
    # A machine answered, the call still up (a message being left): it ends `machine` (`_moved_attempt`).
    (A.DIALING, A.MACHINE): A.MACHINE,
    (A.RINGING, A.MACHINE): A.MACHINE,
    (A.ANSWERED, A.MACHINE): A.MACHINE,
    (A.MACHINE, A.ENDED): A.ENDED,
}


class Trigger(str, Enum):
    """What happens to a call: its current attempt reaching a status, or a command on its batch."""

    ATTEMPT_RINGING = "attempt_ringing"
    ATTEMPT_ANSWERED = "attempt_answered"
    ATTEMPT_ENDED = "attempt_ended"
    CANCEL = "cancel"  # its batch is cancelled: a call not yet dialed ends
    HANG_UP = "hang_up"  # its batch is cancelled with `hangup_live_calls`: a live call ends too
    SUPPRESS = "suppress"  # its number is suppressed for its tenant: a call not yet dialed ends
    EXPIRE = "expire"  # its batch's `expires_at` passed: a call waiting for an attempt ends
    OPT_OUT = "opt_out"  # the callee gave the script's opt-out: the call ends, live or waiting
    WINDOW_CLOSED = "window_closed"  # given a slot outside its calling window: it waits for the opening
    # At submit, with `invalid_numbers: skip`: its number is not valid, or not a destination the
    # tenant allows. The call is stored final, never dialed.
    INVALID_NUMBER = "invalid_number"
    DESTINATION_NOT_ALLOWED = "destination_not_allowed"


TRIGGER_OF_ATTEMPT = {
    A.RINGING: Trigger.ATTEMPT_RINGING,
    A.ANSWERED: Trigger.ATTEMPT_ANSWERED,
    A.MACHINE: Trigger.ATTEMPT_ANSWERED,
    A.ENDED: Trigger.ATTEMPT_ENDED,
}


class Resolve(str, Enum):
    END_OF_ATTEMPT = "end_of_attempt"  # final or retry, by outcome, retry policy and batch state


END_OF_ATTEMPT = Resolve.END_OF_ATTEMPT

CallRule = CallStatus | Outcome | Resolve

CALL_MOVES: dict[tuple[CallStatus, Trigger], CallRule] = {
    (C.DIALING, Trigger.ATTEMPT_RINGING): C.RINGING,
    (C.DIALING, Trigger.ATTEMPT_ANSWERED): C.IN_PROGRESS,
    (C.DIALING, Trigger.ATTEMPT_ENDED): END_OF_ATTEMPT,
    (C.RINGING, Trigger.ATTEMPT_RINGING): C.RINGING,
    (C.RINGING, Trigger.ATTEMPT_ANSWERED): C.IN_PROGRESS,
    (C.RINGING, Trigger.ATTEMPT_ENDED): END_OF_ATTEMPT,
    (C.IN_PROGRESS, Trigger.ATTEMPT_RINGING): C.RINGING,
    (C.IN_PROGRESS, Trigger.ATTEMPT_ANSWERED): C.IN_PROGRESS,
    (C.IN_PROGRESS, Trigger.ATTEMPT_ENDED): END_OF_ATTEMPT,
    (C.QUEUED, Trigger.CANCEL): Outcome.CANCELLED,
    (C.SCHEDULED, Trigger.CANCEL): Outcome.CANCELLED,
    (C.DIALING, Trigger.HANG_UP): Outcome.CANCELLED,
    (C.RINGING, Trigger.HANG_UP): Outcome.CANCELLED,
    (C.IN_PROGRESS, Trigger.HANG_UP): Outcome.CANCELLED,
    (C.QUEUED, Trigger.SUPPRESS): Outcome.SUPPRESSED,
    (C.SCHEDULED, Trigger.SUPPRESS): Outcome.SUPPRESSED,
    (C.QUEUED, Trigger.EXPIRE): Outcome.EXPIRED,
    (C.SCHEDULED, Trigger.EXPIRE): Outcome.EXPIRED,
    # An opt-out ends the call, live or waiting for a retry (a late answer); never retried.
    (C.QUEUED, Trigger.OPT_OUT): Outcome.OPTED_OUT,
    (C.SCHEDULED, Trigger.OPT_OUT): Outcome.OPTED_OUT,
    (C.DIALING, Trigger.OPT_OUT): Outcome.OPTED_OUT,
    (C.RINGING, Trigger.OPT_OUT): Outcome.OPTED_OUT,
    (C.IN_PROGRESS, Trigger.OPT_OUT): Outcome.OPTED_OUT,
    # Given a slot outside its calling window: it waits `scheduled` for the opening, slot freed.
    (C.QUEUED, Trigger.WINDOW_CLOSED): C.SCHEDULED,
    (C.SCHEDULED, Trigger.WINDOW_CLOSED): C.SCHEDULED,
    # Skipped at submit (`invalid_numbers: skip`): a call judged before it was ever queued.
    (C.QUEUED, Trigger.INVALID_NUMBER): Outcome.INVALID_NUMBER,
    (C.QUEUED, Trigger.DESTINATION_NOT_ALLOWED): Outcome.DESTINATION_NOT_ALLOWED,
}

RETRY_WHILE_BATCH = frozenset({B.QUEUED, B.RUNNING, B.PAUSED})
"""A call whose attempt ends while its batch is in another state (cancelled) is final, not retried;
a paused batch's retries wait for it to resume."""


CALL_EVENT_OF: dict[CallStatus, EventType] = {C.COMPLETED: EventType.CALL_COMPLETED, C.FAILED: EventType.CALL_FAILED}


def attempt_move(current: AttemptStatus, reported: AttemptStatus) -> AttemptStatus | None:
    """The attempt's new status when an event reports `reported`, or None (a no-op)."""
    return ATTEMPT_MOVES.get((current, reported))


def finish(outcome: Outcome, error: str | None) -> tuple[Effect, ...]:
    """The effects of a call ending with `outcome`: its final status, its event, its slot freed."""
    status = final_status(outcome)
    event = CALL_EVENT_OF.get(status)
    written: tuple[Effect, ...] = (WriteEvent(event, Payload.CALL),) if event is not None else ()
    return (FinishCall(status, outcome, error), *written, ReleaseSlot())


def end_of_attempt(attempt: Attempt, batch: Batch, *, error: str | None) -> tuple[Effect, ...]:
    """What an ended attempt means for its call: a retry due `delay * multiplier ** (n - 1)`
    seconds after the attempt ended, when the policy retries its outcome, attempts remain and the
    batch is still dialing; else the call's final status. A retry that would come due at or after
    the batch's `expires_at` could never be placed: the call ends `expired` instead, as the
    batch's expiry ends the retries still waiting then. A retry due outside the call's calling
    window is pushed to its next opening (one that never comes ends the call `expired` too).
    `error` is the ending event's."""
    if attempt.outcome is None or attempt.ended_at is None:
        raise ValueError("an ended attempt has an outcome and an end time")
    delay = batch.retry.next_delay(attempt.outcome, attempt.number)
    if delay is not None and batch.status in RETRY_WHILE_BATCH:
        due: datetime | None = attempt.ended_at + timedelta(seconds=delay)
        if batch.window is not None and due is not None:
            due = batch.window.opening(due)  # a retry never falls outside the call's window
        if due is None or (batch.expires_at is not None and due >= batch.expires_at):
            return finish(Outcome.EXPIRED, error)
        return ScheduleRetry(due, error), ReleaseSlot()
    return finish(attempt.outcome, error)


def call_move(
    call: Call, trigger: Trigger, attempt: Attempt | None, batch: Batch | None, *, error: str | None = None
) -> tuple[Call, tuple[Effect, ...]]:
    """The call after `trigger`, and the effects to write. A pair not in `CALL_MOVES` is a no-op.
    `error` is what the provider said with the trigger (kept as the call's `last_error`); the
    ended `attempt` and the `batch` are needed by the `END_OF_ATTEMPT` rows only."""
    rule = CALL_MOVES.get((call.status, trigger))
    if rule is None:
        return call, ()
    effects: tuple[Effect, ...]
    if isinstance(rule, Resolve):
        if attempt is None or batch is None:
            raise ValueError("the end of an attempt is decided with the attempt and its batch")
        effects = end_of_attempt(attempt, batch, error=error)
    elif isinstance(rule, Outcome):
        effects = finish(rule, error)
    else:
        effects = (SetCallStatus(rule),)
    new = call
    for effect in effects:
        if isinstance(effect, SetCallStatus | FinishCall | ScheduleRetry):
            new = replace(new, status=effect.status)
    return new, effects


def _event_time(event: ProviderEvent, attempt: Attempt, now: datetime) -> datetime:
    # A provider's time feeds the retry schedule (a retry is due after `ended_at`): it is kept
    # between the dial and now, so no event can make a retry due at once or never.
    return min(max(datetime.fromtimestamp(event.at, tz=UTC), attempt.dialed_at), now)


def _moved_attempt(attempt: Attempt, event: ProviderEvent, status: AttemptStatus, now: datetime) -> Attempt:
    at = _event_time(event, attempt, now)
    return replace(
        attempt,
        status=status,
        provider_call_id=attempt.provider_call_id or event.provider_call_id,
        error=event.error if event.error is not None else attempt.error,
        answered_at=(attempt.answered_at or at) if status in (A.ANSWERED, A.MACHINE) else attempt.answered_at,
        ended_at=at if status is A.ENDED else attempt.ended_at,
        outcome=Outcome.MACHINE if attempt.status is A.MACHINE and status is A.ENDED else event.outcome,
    )


def _foreign(attempt: Attempt, event: ProviderEvent) -> bool:
    """An event about another provider call, replayed against this attempt's URL."""
    return (
        attempt.provider_call_id is not None
        and event.provider_call_id is not None
        and event.provider_call_id != attempt.provider_call_id
    )


def apply_provider_events(
    attempt: Attempt, call: Call, batch: Batch, events: Sequence[ProviderEvent], *, now: datetime
) -> Step:
    """Apply provider events of `attempt`, in order. Each event moves the attempt by
    `ATTEMPT_MOVES` or is ignored; a move of the call's current attempt, while the call is live,
    moves the call by `CALL_MOVES`. Live moves collapse into one `SetCallStatus`; an ended attempt
    yields a retry or the call's end. `now` is the database's clock."""
    applied: list[str] = []
    responses: list[dict[str, Any]] = []
    live: SetCallStatus | None = None
    ending: tuple[Effect, ...] = ()
    moved = False
    for event in events:
        status = None if _foreign(attempt, event) else attempt_move(attempt.status, event.status)
        if status is None or event.attempt != attempt.number:
            applied.append(Applied.IGNORED)
            continue
        attempt, moved = _moved_attempt(attempt, event, status, now), True
        responses += event.responses or []
        current = call.attempt_count == attempt.number and call.status in LIVE_STATUSES
        if not current:
            applied.append(Applied.LIVE if status is not A.ENDED else Applied.IGNORED)
            continue
        call, effects = call_move(call, TRIGGER_OF_ATTEMPT[status], attempt, batch, error=event.error)
        if status is not A.ENDED:
            live = next((e for e in effects if isinstance(e, SetCallStatus)), live)
            applied.append(Applied.LIVE)
        else:
            ending = effects
            applied.append(Applied.SCHEDULED if any(isinstance(e, ScheduleRetry) for e in effects) else Applied.FINAL)
    effects_out = ending or ((live,) if live is not None else ())
    return Step(tuple(applied), moved, attempt, call, tuple(responses), effects_out)
