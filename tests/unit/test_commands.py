"""Pause, resume, cancel, start and expiry of a batch, walked from `commands.BATCH_MOVES`. No I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

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
    batch_initial_status,
)

PAIRS = list(itertools.product(BatchStatus, cm.Command, [False, True], [False, True]))


@pytest.mark.parametrize(("status", "command", "started", "before_start"), PAIRS)
def test_every_batch_pair_moves_as_the_table_says(
    status: BatchStatus, command: cm.Command, started: bool, before_start: bool
) -> None:
    rule = cm.BATCH_MOVES.get((status, command))
    if rule is None:
        with pytest.raises(InvalidState) as refused:
            cm.batch_command(status, command, started=started, before_start=before_start)
        assert refused.value.http_status == 409 and refused.value.code == "invalid_state"
        return
    effects = cm.batch_command(status, command, started=started, before_start=before_start)
    moves = [e for e in effects if isinstance(e, SetBatchStatus)]
    events = [e for e in effects if isinstance(e, WriteEvent)]
    if rule is cm.UNCHANGED:
        assert moves == [] and events == []
    else:
        expected = (
            cm.resumed_status(started=started, before_start=before_start) if rule is cm.BatchRule.RESUMED else rule
        )
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


@pytest.mark.parametrize("status", [BatchStatus.SCHEDULED, BatchStatus.QUEUED, BatchStatus.RUNNING, BatchStatus.PAUSED])
def test_expiry_ends_the_waiting_calls_expired_and_leaves_the_batch_to_end_by_its_calls(status: BatchStatus) -> None:
    effects = cm.batch_command(status, cm.Command.EXPIRE, started=True)
    assert effects == (EndCalls(PENDING_STATUSES, CallStatus.FAILED, Outcome.EXPIRED),)


@pytest.mark.parametrize("status", sorted(FINAL_BATCH_STATUSES))
def test_a_finished_or_cancelled_batch_does_not_expire(status: BatchStatus) -> None:
    with pytest.raises(InvalidState):
        cm.batch_command(status, cm.Command.EXPIRE, started=True)


def test_a_resumed_batch_runs_if_it_dialed_else_waits_for_its_start_at_if_ahead_else_is_queued() -> None:
    assert cm.resumed_status(started=True, before_start=False) is BatchStatus.RUNNING
    assert cm.resumed_status(started=False, before_start=True) is BatchStatus.SCHEDULED
    assert cm.resumed_status(started=False, before_start=False) is BatchStatus.QUEUED
    paused_early = cm.batch_command(BatchStatus.PAUSED, cm.Command.RESUME, started=False, before_start=True)
    assert paused_early == (SetBatchStatus(BatchStatus.SCHEDULED), WriteEvent(EventType.BATCH_RESUMED, Payload.BATCH))


def test_start_queues_a_scheduled_batch_with_no_event_and_ends_no_call() -> None:
    assert cm.batch_command(BatchStatus.SCHEDULED, cm.Command.START, started=False) == (
        SetBatchStatus(BatchStatus.QUEUED),
    )


@pytest.mark.parametrize("status", [BatchStatus.QUEUED, BatchStatus.RUNNING, BatchStatus.PAUSED])
def test_a_repeated_or_late_start_changes_nothing(status: BatchStatus) -> None:
    """A second wake-up, the sweep after the wake-up, or a start_at passing while paused."""
    assert cm.batch_command(status, cm.Command.START, started=False) == ()


@pytest.mark.parametrize("status", sorted(FINAL_BATCH_STATUSES))
def test_a_finished_or_cancelled_batch_is_not_started(status: BatchStatus) -> None:
    with pytest.raises(InvalidState):
        cm.batch_command(status, cm.Command.START, started=False)


def test_a_scheduled_batch_pauses_and_cancels_as_a_queued_one_does() -> None:
    for command in (cm.Command.PAUSE, cm.Command.CANCEL, cm.Command.RESUME, cm.Command.EXPIRE):
        scheduled = cm.batch_command(BatchStatus.SCHEDULED, command, started=False, hang_up=True)
        queued = cm.batch_command(BatchStatus.QUEUED, command, started=False, hang_up=True)
        assert scheduled == queued, command
    cancel = cm.batch_command(BatchStatus.SCHEDULED, cm.Command.CANCEL, started=False)
    assert cancel == (
        SetBatchStatus(BatchStatus.CANCELLED),
        EndCalls(PENDING_STATUSES, CallStatus.CANCELLED, Outcome.CANCELLED),
    )


def test_a_new_batch_is_scheduled_only_while_its_start_at_is_ahead() -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert batch_initial_status(None, now) is BatchStatus.QUEUED
    assert batch_initial_status(now - timedelta(seconds=1), now) is BatchStatus.QUEUED
    assert batch_initial_status(now, now) is BatchStatus.QUEUED
    assert batch_initial_status(now + timedelta(milliseconds=1), now) is BatchStatus.SCHEDULED
