"""The plain data `lifecycle` reads and returns: the states the store loads, the effects it
writes, and what applying a provider event did. No I/O, no rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from batchcalls.domain.call_windows import CallWindow
from batchcalls.domain.events import EventType
from batchcalls.domain.retry import RetryPolicy
from batchcalls.domain.states import AttemptStatus, BatchStatus, CallStatus, Outcome


class Applied:
    """What applying a provider event did (how the engine treats the call's slot)."""

    IGNORED = "ignored"  # repeated, out of order, or for an unknown attempt
    LIVE = "live"  # the attempt moved forward and the call is still live (its slot is renewed)
    SCHEDULED = "scheduled"  # the attempt ended and the call waits for a retry (slot released)
    FINAL = "final"  # the call reached its final state (slot released)


# States, as the store loads them.


@dataclass(frozen=True)
class Attempt:
    number: int
    status: AttemptStatus
    dialed_at: datetime
    provider_call_id: str | None = None
    error: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: Outcome | None = None


@dataclass(frozen=True)
class Call:
    status: CallStatus
    attempt_count: int


@dataclass(frozen=True)
class Batch:
    status: BatchStatus
    retry: RetryPolicy
    expires_at: datetime | None = None  # after it no attempt of the batch's calls is placed
    window: CallWindow | None = None  # the call's calling window (its own, else the batch's)


@dataclass(frozen=True)
class BatchCounts:
    """A batch's row after the call that just became final was counted."""

    status: BatchStatus
    total_calls: int
    completed_calls: int
    failed_calls: int
    cancelled_calls: int


# Effects, for the store (and the engine) to carry out.


class Payload(str, Enum):
    CALL = "call"  # the call as `/calls` shows it, with its attempts
    BATCH = "batch"  # the batch's status body


@dataclass(frozen=True)
class WriteEvent:
    type: EventType
    payload: Payload


@dataclass(frozen=True)
class SetCallStatus:
    status: CallStatus


@dataclass(frozen=True)
class ScheduleRetry:
    """The call waits in `status` until `due`, then is dialed again; `error` is its `last_error`."""

    due: datetime
    error: str | None
    status: CallStatus = CallStatus.SCHEDULED


@dataclass(frozen=True)
class FinishCall:
    """The call becomes final; then its batch counts it (see `on_call_final`)."""

    status: CallStatus
    outcome: Outcome
    error: str | None


@dataclass(frozen=True)
class ReleaseSlot:
    """The call gives back its slot (of its batch's concurrency). Applying provider events, the
    engine frees a call's slot, and gives it to the next call, on this effect and no other."""


@dataclass(frozen=True)
class FinishBatch:
    status: BatchStatus


@dataclass(frozen=True)
class SetBatchStatus:
    status: BatchStatus


@dataclass(frozen=True)
class EndCalls:
    """Every call of the batch in one of `statuses` ends with `outcome`, in one statement: a
    command's end of many calls costs no task and no event per call (its final status counts)."""

    statuses: frozenset[CallStatus]
    status: CallStatus
    outcome: Outcome


@dataclass(frozen=True)
class HangUp:
    """The batch's calls in one of `statuses` (live ones) are each ended by `trigger` and hung up
    through the provider, one by one (at most the batch's concurrency of them)."""

    statuses: frozenset[CallStatus]
    trigger: str  # a `lifecycle.Trigger` value


Effect = (
    SetCallStatus
    | ScheduleRetry
    | FinishCall
    | WriteEvent
    | ReleaseSlot
    | FinishBatch
    | SetBatchStatus
    | EndCalls
    | HangUp
)


@dataclass(frozen=True)
class Step:
    """What a run of provider events does to one attempt and its call."""

    applied: tuple[str, ...]  # one `Applied` value per event
    attempt_moved: bool  # an event moved the attempt (even one the call no longer follows)
    attempt: Attempt
    call: Call
    responses: tuple[dict[str, Any], ...]
    effects: tuple[Effect, ...]
