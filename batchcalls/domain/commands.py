"""Commands on a batch (pause, resume, cancel, and its start and expiry) as a table, applied by a pure function.

No I/O. `BATCH_MOVES` says what each command does to the batch's status; the calls a command ends
move by the `lifecycle.CALL_MOVES` rows of its trigger, so which calls a cancel ends is read from
that table, not written here again. The store takes the batch's row lock, calls `batch_command`,
and writes the effects; a repeated command changes nothing and writes no event.
"""

from __future__ import annotations

from enum import Enum

from batchcalls.domain.errors import InvalidState
from batchcalls.domain.events import EventType
from batchcalls.domain.lifecycle import CALL_MOVES, Trigger
from batchcalls.domain.lifecycle_data import Effect, EndCalls, HangUp, Payload, SetBatchStatus, WriteEvent
from batchcalls.domain.states import BatchStatus, CallStatus, Outcome, final_status

B = BatchStatus


class Command(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    EXPIRE = "expire"  # not a route: the batch's `expires_at` has passed (the engine's own command)
    START = "start"  # not a route: the batch's `start_at` has come (the engine's own command)


class BatchRule(str, Enum):
    UNCHANGED = "unchanged"  # the command is repeated: nothing to do, no event
    # `running` when a call was dialed already; else `scheduled` while its `start_at` is ahead,
    # else `queued` (not started)
    RESUMED = "resumed"


UNCHANGED = BatchRule.UNCHANGED

BATCH_MOVES: dict[tuple[BatchStatus, Command], BatchStatus | BatchRule] = {
    (B.SCHEDULED, Command.PAUSE): B.PAUSED,
    (B.QUEUED, Command.PAUSE): B.PAUSED,
    (B.RUNNING, Command.PAUSE): B.PAUSED,
    (B.PAUSED, Command.PAUSE): UNCHANGED,
    (B.PAUSED, Command.RESUME): BatchRule.RESUMED,
    (B.SCHEDULED, Command.RESUME): UNCHANGED,
    (B.QUEUED, Command.RESUME): UNCHANGED,
    (B.RUNNING, Command.RESUME): UNCHANGED,
    (B.SCHEDULED, Command.CANCEL): B.CANCELLED,
    (B.QUEUED, Command.CANCEL): B.CANCELLED,
    (B.RUNNING, Command.CANCEL): B.CANCELLED,
    (B.PAUSED, Command.CANCEL): B.CANCELLED,
    (B.CANCELLED, Command.CANCEL): UNCHANGED,  # a second cancel may still hang up live calls
    # Expiry ends the waiting calls and leaves the batch's status: it ends by its calls' outcomes
    # once its live calls have ended. Repeated, it ends the calls that became waiting since.
    (B.SCHEDULED, Command.EXPIRE): UNCHANGED,
    (B.QUEUED, Command.EXPIRE): UNCHANGED,
    (B.RUNNING, Command.EXPIRE): UNCHANGED,
    (B.PAUSED, Command.EXPIRE): UNCHANGED,
    # The start of a scheduled batch: its calls may be dialed from now on. Repeated, or come to a
    # batch started already, it changes nothing; a batch paused before it stays paused, and its
    # resume finds `start_at` passed (`RESUMED`).
    (B.SCHEDULED, Command.START): B.QUEUED,
    (B.QUEUED, Command.START): UNCHANGED,
    (B.RUNNING, Command.START): UNCHANGED,
    (B.PAUSED, Command.START): UNCHANGED,
}

COMMAND_EVENT_OF: dict[Command, EventType] = {
    Command.PAUSE: EventType.BATCH_PAUSED,
    Command.RESUME: EventType.BATCH_RESUMED,
    # A cancel's event is the terminal `batch.cancelled`, written when its last call is final
    # (`lifecycle.BATCH_ON_LAST_CALL`), by the cancel itself or by the last live call's end.
}

COMMAND_TRIGGERS: dict[Command, tuple[Trigger, ...]] = {
    Command.CANCEL: (Trigger.CANCEL,),
    Command.EXPIRE: (Trigger.EXPIRE,),
}
"""The call triggers a command fires on every call of its batch, in one statement each."""

HANG_UP_TRIGGER = Trigger.HANG_UP
"""Fired, with `hangup_live_calls`, on each live call of a cancelled batch, one call at a time."""


def moved_by(trigger: Trigger) -> dict[Outcome, frozenset[CallStatus]]:
    """The call statuses `trigger` ends, grouped by the outcome they end with (`CALL_MOVES`)."""
    groups: dict[Outcome, set[CallStatus]] = {}
    for (status, row_trigger), rule in CALL_MOVES.items():
        if row_trigger is trigger and isinstance(rule, Outcome):
            groups.setdefault(rule, set()).add(status)
    return {outcome: frozenset(statuses) for outcome, statuses in groups.items()}


def batch_command(
    status: BatchStatus, command: Command, *, started: bool, before_start: bool = False, hang_up: bool = False
) -> tuple[Effect, ...]:
    """The effects of `command` on a batch in `status` (`started`: a call was dialed already;
    `before_start`: its `start_at` is still ahead). `hang_up` (cancel only) also ends the live
    calls through the provider. Raises `InvalidState` when the table has no row: a finished
    batch, or a cancelled one paused."""
    rule = BATCH_MOVES.get((status, command))
    if rule is None:
        raise InvalidState(
            f"a {status.value} batch cannot be {_PAST[command]}",
            {"status": status.value, "command": command.value},
        )
    effects: list[Effect] = []
    if rule is not UNCHANGED:
        new = resumed_status(started=started, before_start=before_start) if rule is BatchRule.RESUMED else B(rule)
        effects.append(SetBatchStatus(new))
        if command in COMMAND_EVENT_OF:
            effects.append(WriteEvent(COMMAND_EVENT_OF[command], Payload.BATCH))
    for trigger in COMMAND_TRIGGERS.get(command, ()):
        for outcome, statuses in moved_by(trigger).items():
            effects.append(EndCalls(statuses, final_status(outcome), outcome))
    if hang_up and command is Command.CANCEL:
        live = frozenset(s for statuses in moved_by(HANG_UP_TRIGGER).values() for s in statuses)
        effects.append(HangUp(live, HANG_UP_TRIGGER.value))
    return tuple(effects)


def resumed_status(*, started: bool, before_start: bool) -> BatchStatus:
    """The status `BatchRule.RESUMED` gives a paused batch."""
    if started:
        return B.RUNNING
    return B.SCHEDULED if before_start else B.QUEUED


_PAST = {
    Command.PAUSE: "paused",
    Command.RESUME: "resumed",
    Command.CANCEL: "cancelled",
    Command.EXPIRE: "expired",
    Command.START: "started",
}
