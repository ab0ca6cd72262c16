"""Pause, resume and cancel on a batch, walked from `commands.BATCH_MOVES`. No I/O."""

from __future__ import annotations

import itertools

import pytest

from batchcalls.domain import commands as cm
from batchcalls.domain import lifecycle as lc
from batchcalls.domain.errors import InvalidState
from batchcalls.domain.events import EventType
from batchcalls.domain.lifecycle_data import EndCalls, HangUp, Payload, SetBatchStatus, WriteEvent
from batchcalls.domain.states import (
    FINAL_BATCH_STATUSES,
    LIVE_STATUSES,
    PENDING_STATUSES,
    BatchStatus,
    CallStatus,
    Outcome,
)

PAIRS = list(itertools.product(BatchStatus, cm.Command, [False, True]))


@pytest.mark.parametrize(("status", "command", "started"), PAIRS)
def test_every_batch_pair_moves_as_the_table_says(status: BatchStatus, command: cm.Command, started: bool) -> None:
    rule = cm.BATCH_MOVES.get((status, command))
    if rule is None:
        with pytest.raises(InvalidState) as refused:
            cm.batch_command(status, command, started=started)
        assert refused.value.http_status == 409 and refused.value.code == "invalid_state"
        return
    effects = cm.batch_command(status, command, started=started)
    moves = [e for e in effects if isinstance(e, SetBatchStatus)]
    events = [e for e in effects if isinstance(e, WriteEvent)]
    if rule is cm.UNCHANGED:
        assert moves == [] and events == []
    else:
        expected = (BatchStatus.RUNNING if started else BatchStatus.QUEUED) if rule is cm.BatchRule.RESUMED else rule
        assert moves == [SetBatchStatus(BatchStatus(expected))]
        assert events == (
            [WriteEvent(cm.COMMAND_EVENT_OF[command], Payload.BATCH)] if command in cm.COMMAND_EVENT_OF else []
        )
    ends = [e for e in effects if isinstance(e, EndCalls)]
    assert bool(ends) == (command in cm.COMMAND_TRIGGERS)


@pytest.mark.parametrize("status", sorted(FINAL_BATCH_STATUSES))
@pytest.mark.parametrize("command", [cm.Command.PAUSE, cm.Command.RESUME])
def test_a_finished_or_cancelled_batch_refuses_pause_and_resume(status: BatchStatus, command: cm.Command) -> None:
    with pytest.raises(InvalidState):
        cm.batch_command(status, command, started=True)


def test_a_cancel_ends_the_waiting_calls_in_one_effect_read_from_the_call_table() -> None:
    effects = cm.batch_command(BatchStatus.RUNNING, cm.Command.CANCEL, started=True)
    assert EndCalls(PENDING_STATUSES, CallStatus.CANCELLED, Outcome.CANCELLED) in effects
    # Its terminal event is written when the last call is final, not by the command.
    assert not [e for e in effects if isinstance(e, WriteEvent)]


def test_a_cancel_with_hangup_names_the_live_statuses() -> None:
    effects = cm.batch_command(BatchStatus.PAUSED, cm.Command.CANCEL, started=True, hang_up=True)
    assert HangUp(LIVE_STATUSES, lc.Trigger.HANG_UP.value) in effects


def test_a_second_cancel_changes_nothing_but_may_still_hang_up() -> None:
    again = cm.batch_command(BatchStatus.CANCELLED, cm.Command.CANCEL, started=True, hang_up=True)
    assert not [e for e in again if isinstance(e, SetBatchStatus | WriteEvent)]
    assert any(isinstance(e, HangUp) for e in again)


def test_pause_and_resume_write_their_events() -> None:
    assert cm.COMMAND_EVENT_OF == {cm.Command.PAUSE: EventType.BATCH_PAUSED, cm.Command.RESUME: EventType.BATCH_RESUMED}


@pytest.mark.parametrize("status", [BatchStatus.QUEUED, BatchStatus.RUNNING, BatchStatus.PAUSED])
def test_expiry_ends_the_waiting_calls_expired_and_leaves_the_batch_to_end_by_its_calls(status: BatchStatus) -> None:
    effects = cm.batch_command(status, cm.Command.EXPIRE, started=True)
    assert effects == (EndCalls(PENDING_STATUSES, CallStatus.FAILED, Outcome.EXPIRED),)


@pytest.mark.parametrize("status", sorted(FINAL_BATCH_STATUSES))
def test_a_finished_or_cancelled_batch_does_not_expire(status: BatchStatus) -> None:
    with pytest.raises(InvalidState):
        cm.batch_command(status, cm.Command.EXPIRE, started=True)
