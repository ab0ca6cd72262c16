"""Call, attempt and batch states, the outcomes a call can end with, and the allowed moves.

Pure data and pure functions: no I/O. A provider event is applied only when the transition table
allows it, so a repeated or out-of-order event is a no-op instead of a corruption.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum


class CallStatus(str, Enum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    DIALING = "dialing"
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


LIVE_STATUSES = frozenset({CallStatus.DIALING, CallStatus.RINGING, CallStatus.IN_PROGRESS})
PENDING_STATUSES = frozenset({CallStatus.QUEUED, CallStatus.SCHEDULED})
FINAL_STATUSES = frozenset({CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.CANCELLED})


class Outcome(str, Enum):
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    REJECTED = "rejected"
    MACHINE = "machine"
    INVALID_NUMBER = "invalid_number"  # not a valid number: with `invalid_numbers: skip`, recorded, never dialed
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"  # the number is on its tenant's suppression list: never dialed
    EXPIRED = "expired"  # its batch's `expires_at` passed before its next attempt was placed
    OPTED_OUT = "opted_out"  # the callee gave an input step's opt-out: the number is suppressed
    # A valid number the tenant's destination rules forbid: with `invalid_numbers: skip`, recorded, never dialed.
    DESTINATION_NOT_ALLOWED = "destination_not_allowed"


RETRYABLE_OUTCOMES = frozenset({Outcome.BUSY, Outcome.NO_ANSWER, Outcome.FAILED, Outcome.REJECTED, Outcome.MACHINE})


def final_status(outcome: Outcome) -> CallStatus:
    """The call status a final outcome puts a call in."""
    if outcome is Outcome.COMPLETED:
        return CallStatus.COMPLETED
    if outcome is Outcome.CANCELLED:
        return CallStatus.CANCELLED
    return CallStatus.FAILED


class AttemptStatus(str, Enum):
    """The life of one dial. Events move it forward only; `ended` is terminal."""

    DIALING = "dialing"
    RINGING = "ringing"
    ANSWERED = "answered"
    MACHINE = "machine"  # answered by a machine, and still up (leaving a message): it ends `machine`
    ENDED = "ended"


_ATTEMPT_RANK = {
    AttemptStatus.DIALING: 0,
    AttemptStatus.RINGING: 1,
    AttemptStatus.ANSWERED: 2,
    AttemptStatus.MACHINE: 3,
    AttemptStatus.ENDED: 4,
}

ATTEMPT_TO_CALL_STATUS = {
    AttemptStatus.DIALING: CallStatus.DIALING,
    AttemptStatus.RINGING: CallStatus.RINGING,
    AttemptStatus.ANSWERED: CallStatus.IN_PROGRESS,
    AttemptStatus.MACHINE: CallStatus.IN_PROGRESS,
}


def attempt_may_move(current: AttemptStatus, new: AttemptStatus) -> bool:
    """True when an event reporting `new` advances an attempt that is in `current`.

    Moves go forward only (dialing -> ringing -> answered -> machine -> ended, skipping allowed); an event
    for a state already reached or passed, and anything after `ended`, changes nothing.
    """
    return _ATTEMPT_RANK[new] > _ATTEMPT_RANK[current]


class BatchStatus(str, Enum):
    SCHEDULED = "scheduled"  # its `start_at` is ahead: nothing of it is dialed before then
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"
    CANCELLED = "cancelled"


ACTIVE_BATCH_STATUSES = frozenset({BatchStatus.SCHEDULED, BatchStatus.QUEUED, BatchStatus.RUNNING, BatchStatus.PAUSED})


def batch_initial_status(start_at: datetime | None, now: datetime) -> BatchStatus:
    """A new batch is `scheduled` while its `start_at` is ahead of `now`, else `queued` (a
    `start_at` now or past means: start now)."""
    return BatchStatus.SCHEDULED if start_at is not None and start_at > now else BatchStatus.QUEUED


def batch_final_status(completed_calls: int) -> BatchStatus:
    """A batch whose calls are all final is `failed` when none succeeded, else `completed`."""
    return BatchStatus.COMPLETED if completed_calls > 0 else BatchStatus.FAILED


# More status groups. These and the ones above are the only definitions of each group: code tests
# membership with them, and SQL takes them as a parameter (`status = ANY(%s)` with `values(...)`),
# never as literals typed into the query text.
UNFINISHED_STATUSES = PENDING_STATUSES | LIVE_STATUSES
# The batches whose calls are dialed and retried; a paused or scheduled batch keeps its calls
# waiting, its gate in Redis closed.
DIALING_BATCH_STATUSES = frozenset({BatchStatus.QUEUED, BatchStatus.RUNNING})
FINAL_BATCH_STATUSES = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED})


def values(group: frozenset[CallStatus] | frozenset[BatchStatus]) -> list[str]:
    """A group's status names in the order their enum declares them: the form SQL takes as a
    parameter, and a stable order for anything that lists them."""
    kind = CallStatus if isinstance(next(iter(group)), CallStatus) else BatchStatus
    return [status.value for status in kind if status in group]
