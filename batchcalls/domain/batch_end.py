"""The end of a batch when its last call becomes final: a table and a pure function (no I/O),
part of the state machine `lifecycle` holds (and exports)."""

from __future__ import annotations

from enum import Enum

from batchcalls.domain.events import EventType
from batchcalls.domain.lifecycle_data import BatchCounts, Effect, FinishBatch, Payload, WriteEvent
from batchcalls.domain.states import BatchStatus, batch_final_status

B = BatchStatus


class BatchEnd(str, Enum):
    BY_OUTCOMES = "by_outcomes"  # `failed` when no call completed, else `completed`


BATCH_ON_LAST_CALL: dict[BatchStatus, BatchStatus | BatchEnd] = {
    B.SCHEDULED: BatchEnd.BY_OUTCOMES,  # every number suppressed at submit, or expired unstarted
    B.QUEUED: BatchEnd.BY_OUTCOMES,
    B.RUNNING: BatchEnd.BY_OUTCOMES,
    B.PAUSED: BatchEnd.BY_OUTCOMES,
    B.CANCELLED: B.CANCELLED,
}

BATCH_EVENT_OF: dict[BatchStatus, EventType] = {
    B.COMPLETED: EventType.BATCH_COMPLETED,
    B.FAILED: EventType.BATCH_FAILED,
    B.CANCELLED: EventType.BATCH_CANCELLED,
}


def on_call_final(batch: BatchCounts) -> tuple[Effect, ...]:
    """What a call becoming final means for its batch (counted in `batch` already): when every
    call is final and `BATCH_ON_LAST_CALL` has a row for the batch's status, the batch ends."""
    done = batch.completed_calls + batch.failed_calls + batch.cancelled_calls
    rule = BATCH_ON_LAST_CALL.get(batch.status)
    if done != batch.total_calls or rule is None:
        return ()
    status = batch_final_status(batch.completed_calls) if rule is BatchEnd.BY_OUTCOMES else BatchStatus(rule)
    return FinishBatch(status), WriteEvent(BATCH_EVENT_OF[status], Payload.BATCH)
