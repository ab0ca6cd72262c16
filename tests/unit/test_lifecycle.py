"""The pure state machine of calls, attempts and batches, walked from its own tables. No I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from batchcalls.domain import lifecycle as lc
from batchcalls.domain.call_windows import CallWindow
from batchcalls.domain.events import EventType
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.retry import RetryPolicy
from batchcalls.domain.states import (
    ATTEMPT_TO_CALL_STATUS,
    FINAL_STATUSES,
    LIVE_STATUSES,
    AttemptStatus,
    BatchStatus,
    CallStatus,
    Outcome,
    attempt_may_move,
)
from batchcalls.domain.window_spec import parse_calling_window

DIALED = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
NOW = DIALED + timedelta(minutes=5)
AT = (DIALED + timedelta(seconds=30)).timestamp()
ONE_TRY = lc.Batch(BatchStatus.RUNNING, RetryPolicy())
THREE_TRIES = lc.Batch(BatchStatus.RUNNING, RetryPolicy(max_attempts=3, delay=60, backoff_multiplier=2))
ALL_PAIRS = list(itertools.product(AttemptStatus, AttemptStatus))


def event(
    status: AttemptStatus,
    *,
    attempt: int = 1,
    outcome: Outcome | None = None,
    at: float = AT,
    provider_call_id: str | None = "p1",
    error: str | None = None,
    responses: list[dict[str, str]] | None = None,
) -> ProviderEvent:
    if status is AttemptStatus.ENDED and outcome is None:
        outcome = Outcome.BUSY
    return ProviderEvent(
        "call_1",
        attempt,
        status,
        at,
        outcome=outcome,
        provider_call_id=provider_call_id,
        error=error,
        responses=responses,
    )


def attempt(status: AttemptStatus = AttemptStatus.DIALING, number: int = 1) -> lc.Attempt:
    return lc.Attempt(number=number, status=status, dialed_at=DIALED)


def live_call(status: AttemptStatus, number: int = 1) -> lc.Call:
    """The call as it stands while its attempt `number` is in `status`."""
    return lc.Call(ATTEMPT_TO_CALL_STATUS.get(status, CallStatus.DIALING), number)


def apply(att: lc.Attempt, call: lc.Call, *events: ProviderEvent, batch: lc.Batch = ONE_TRY) -> lc.Step:
    return lc.apply_provider_events(att, call, batch, events, now=NOW)


# Attempts: every (attempt status, reported status) pair.


def test_attempt_table_moves_forward_only() -> None:
    for current, reported in ALL_PAIRS:
        assert ((current, reported) in lc.ATTEMPT_MOVES) == attempt_may_move(current, reported)


@pytest.mark.parametrize(("current", "reported"), ALL_PAIRS)
def test_every_attempt_pair_moves_as_the_table_says(current: AttemptStatus, reported: AttemptStatus) -> None:
    step = apply(attempt(current), live_call(current), event(reported))
    target = lc.ATTEMPT_MOVES.get((current, reported))
    if target is None:
        assert step.applied == (lc.Applied.IGNORED,)
        assert not step.attempt_moved and step.effects == () and step.attempt == attempt(current)
    else:
        assert step.attempt_moved and step.attempt.status is target
        assert step.applied == ((lc.Applied.LIVE,) if target is not AttemptStatus.ENDED else (lc.Applied.FINAL,))


@pytest.mark.parametrize(("current", "reported"), list(lc.ATTEMPT_MOVES))
def test_a_repeated_event_is_a_no_op(current: AttemptStatus, reported: AttemptStatus) -> None:
    once = apply(attempt(current), live_call(current), event(reported))
    twice = apply(attempt(current), live_call(current), event(reported), event(reported))
    assert twice.applied == (*once.applied, lc.Applied.IGNORED)
    assert (twice.attempt, twice.call, twice.effects) == (once.attempt, once.call, once.effects)


@pytest.mark.parametrize(("later", "earlier"), [(b, a) for a, b in itertools.combinations(AttemptStatus, 2)])
def test_an_event_arriving_after_a_later_one_is_a_no_op(later: AttemptStatus, earlier: AttemptStatus) -> None:
    step = apply(attempt(), live_call(AttemptStatus.DIALING), event(later), event(earlier))
    assert step.applied[1] == lc.Applied.IGNORED
    assert step.attempt.status is later


def test_an_event_of_another_provider_call_is_ignored() -> None:
    att = lc.Attempt(number=1, status=AttemptStatus.RINGING, dialed_at=DIALED, provider_call_id="p1")
    step = apply(att, live_call(AttemptStatus.RINGING), event(AttemptStatus.ENDED, provider_call_id="other"))
    assert step.applied == (lc.Applied.IGNORED,) and not step.attempt_moved


def test_the_provider_time_is_kept_between_the_dial_and_now() -> None:
    early = apply(attempt(), live_call(AttemptStatus.DIALING), event(AttemptStatus.ENDED, at=0.0))
    late = apply(attempt(), live_call(AttemptStatus.DIALING), event(AttemptStatus.ENDED, at=4e9))
    assert (early.attempt.ended_at, late.attempt.ended_at) == (DIALED, NOW)


def test_answered_time_is_kept_and_responses_come_from_applied_events_only() -> None:
    ended = event(AttemptStatus.ENDED, outcome=Outcome.COMPLETED, responses=[{"id": "r1"}])
    step = apply(
        attempt(),
        live_call(AttemptStatus.DIALING),
        event(AttemptStatus.ANSWERED),
        ended,
        event(AttemptStatus.RINGING, responses=[{"id": "r2"}]),
    )
    assert step.attempt.answered_at == datetime.fromtimestamp(AT, tz=UTC)
    assert step.responses == ({"id": "r1"},)
    assert step.attempt.outcome is Outcome.COMPLETED


# Calls: every (call status, trigger) pair, and every call status under every provider event.


@pytest.mark.parametrize(("status", "trigger"), list(itertools.product(CallStatus, lc.Trigger)))
def test_every_call_pair_moves_as_the_table_says(status: CallStatus, trigger: lc.Trigger) -> None:
    ended = lc.Attempt(number=1, status=AttemptStatus.ENDED, dialed_at=DIALED, ended_at=NOW, outcome=Outcome.BUSY)
    call, effects = lc.call_move(lc.Call(status, 1), trigger, ended, ONE_TRY)
    rule = lc.CALL_MOVES.get((status, trigger))
    if rule is None:
        assert (call, effects) == (lc.Call(status, 1), ())
    elif rule is lc.END_OF_ATTEMPT:
        assert call.status is CallStatus.FAILED
        assert effects == (
            lc.FinishCall(CallStatus.FAILED, Outcome.BUSY, None),
            lc.WriteEvent(EventType.CALL_FAILED, lc.Payload.CALL),
            lc.ReleaseSlot(),
        )
    elif isinstance(rule, Outcome):
        assert effects == lc.finish(rule, None) and call.status in FINAL_STATUSES
    else:
        assert call.status is rule and effects == (lc.SetCallStatus(CallStatus(rule)),)


@pytest.mark.parametrize(("status", "reported"), list(itertools.product(CallStatus, AttemptStatus)))
def test_a_provider_event_moves_only_a_live_call(status: CallStatus, reported: AttemptStatus) -> None:
    step = apply(attempt(), lc.Call(status, 1), event(reported))
    if (AttemptStatus.DIALING, reported) not in lc.ATTEMPT_MOVES:
        assert step.applied == (lc.Applied.IGNORED,) and step.call.status is status
    elif status not in LIVE_STATUSES:
        assert step.attempt_moved and step.effects == () and step.call.status is status
        assert step.applied == ((lc.Applied.IGNORED,) if reported is AttemptStatus.ENDED else (lc.Applied.LIVE,))
    else:
        rule = lc.CALL_MOVES[(status, lc.TRIGGER_OF_ATTEMPT[reported])]
        if rule is lc.END_OF_ATTEMPT:
            assert step.call.status is CallStatus.FAILED and step.applied == (lc.Applied.FINAL,)
        else:
            assert step.effects == (lc.SetCallStatus(CallStatus(rule)),) and step.applied == (lc.Applied.LIVE,)


@pytest.mark.parametrize("reported", list(lc.TRIGGER_OF_ATTEMPT))
def test_an_event_of_an_earlier_attempt_leaves_the_call_alone(reported: AttemptStatus) -> None:
    step = apply(attempt(), lc.Call(CallStatus.RINGING, 2), event(reported), batch=THREE_TRIES)
    assert step.attempt_moved and step.effects == () and step.call == lc.Call(CallStatus.RINGING, 2)


def test_live_moves_collapse_into_the_last_status() -> None:
    step = apply(
        attempt(), live_call(AttemptStatus.DIALING), event(AttemptStatus.RINGING), event(AttemptStatus.ANSWERED)
    )
    assert step.effects == (lc.SetCallStatus(CallStatus.IN_PROGRESS),)
    assert step.applied == (lc.Applied.LIVE, lc.Applied.LIVE)


def test_an_end_replaces_the_live_moves_before_it() -> None:
    step = apply(
        attempt(),
        live_call(AttemptStatus.DIALING),
        event(AttemptStatus.RINGING),
        event(AttemptStatus.ENDED, outcome=Outcome.COMPLETED),
    )
    assert step.effects == (
        lc.FinishCall(CallStatus.COMPLETED, Outcome.COMPLETED, None),
        lc.WriteEvent(EventType.CALL_COMPLETED, lc.Payload.CALL),
        lc.ReleaseSlot(),
    )
    assert step.applied == (lc.Applied.LIVE, lc.Applied.FINAL)


# Retries.


def ended_at(number: int) -> lc.Attempt:
    return lc.Attempt(number=number, status=AttemptStatus.ENDED, dialed_at=DIALED, ended_at=NOW, outcome=Outcome.BUSY)


@pytest.mark.parametrize(("number", "wait"), [(1, 60), (2, 120)])
def test_a_retry_waits_delay_times_multiplier_from_the_end_of_the_attempt(number: int, wait: int) -> None:
    effects = lc.end_of_attempt(ended_at(number), THREE_TRIES, error="busy line")
    assert effects == (lc.ScheduleRetry(NOW + timedelta(seconds=wait), "busy line"), lc.ReleaseSlot())


def test_max_attempts_counts_the_first() -> None:
    assert isinstance(lc.end_of_attempt(ended_at(3), THREE_TRIES, error=None)[0], lc.FinishCall)
    assert isinstance(lc.end_of_attempt(ended_at(1), ONE_TRY, error=None)[0], lc.FinishCall)


@pytest.mark.parametrize("outcome", list(Outcome))
def test_only_retry_on_outcomes_are_retried(outcome: Outcome) -> None:
    att = lc.Attempt(number=1, status=AttemptStatus.ENDED, dialed_at=DIALED, ended_at=NOW, outcome=outcome)
    first = lc.end_of_attempt(att, THREE_TRIES, error=None)[0]
    assert isinstance(first, lc.ScheduleRetry) == (outcome in THREE_TRIES.retry.retry_on)


@pytest.mark.parametrize("batch_status", list(BatchStatus))
def test_a_call_is_retried_only_while_its_batch_dials(batch_status: BatchStatus) -> None:
    batch = lc.Batch(batch_status, THREE_TRIES.retry)
    first = lc.end_of_attempt(ended_at(1), batch, error=None)[0]
    assert isinstance(first, lc.ScheduleRetry) == (batch_status in lc.RETRY_WHILE_BATCH)


def test_a_retry_that_would_come_due_after_the_batch_expires_ends_the_call_expired() -> None:
    expiring = lc.Batch(BatchStatus.RUNNING, THREE_TRIES.retry, expires_at=NOW + timedelta(seconds=60))
    effects = lc.end_of_attempt(ended_at(1), expiring, error="busy line")
    assert effects == (
        lc.FinishCall(CallStatus.FAILED, Outcome.EXPIRED, "busy line"),
        lc.WriteEvent(EventType.CALL_FAILED, lc.Payload.CALL),
        lc.ReleaseSlot(),
    )
    later = lc.Batch(BatchStatus.RUNNING, THREE_TRIES.retry, expires_at=NOW + timedelta(seconds=61))
    assert isinstance(lc.end_of_attempt(ended_at(1), later, error=None)[0], lc.ScheduleRetry)


@pytest.mark.parametrize("status", list(CallStatus))
def test_expiry_ends_only_calls_waiting_for_an_attempt(status: CallStatus) -> None:
    call, effects = lc.call_move(lc.Call(status, 1), lc.Trigger.EXPIRE, None, None)
    if status in (CallStatus.QUEUED, CallStatus.SCHEDULED):
        assert call.status is CallStatus.FAILED
        assert effects[0] == lc.FinishCall(CallStatus.FAILED, Outcome.EXPIRED, None)
    else:
        assert (call, effects) == (lc.Call(status, 1), ())


def test_a_retry_is_scheduled_from_provider_events() -> None:
    step = apply(
        attempt(),
        live_call(AttemptStatus.DIALING),
        event(AttemptStatus.ENDED, at=AT, error="no answer"),
        batch=THREE_TRIES,
    )
    due = datetime.fromtimestamp(AT, tz=UTC) + timedelta(seconds=60)
    assert step.applied == (lc.Applied.SCHEDULED,)
    assert step.call.status is CallStatus.SCHEDULED and lc.ScheduleRetry(due, "no answer") in step.effects


@pytest.mark.parametrize("outcome", list(Outcome))
def test_the_final_status_and_event_of_each_outcome(outcome: Outcome) -> None:
    effects = lc.finish(outcome, None)
    status = effects[0].status if isinstance(effects[0], lc.FinishCall) else None
    assert status in FINAL_STATUSES
    assert (status is CallStatus.COMPLETED) == (outcome is Outcome.COMPLETED)
    written = [e.type for e in effects if isinstance(e, lc.WriteEvent)]
    assert written == ([lc.CALL_EVENT_OF[status]] if status in lc.CALL_EVENT_OF else [])


# Batches.


@pytest.mark.parametrize(("status", "completed"), list(itertools.product(BatchStatus, [0, 1])))
def test_a_batch_ends_when_its_last_call_is_final(status: BatchStatus, completed: int) -> None:
    last = lc.on_call_final(lc.BatchCounts(status, 3, completed, 3 - completed, 0))
    not_last = lc.on_call_final(lc.BatchCounts(status, 4, completed, 3 - completed, 0))
    assert not_last == ()
    if status not in lc.BATCH_ON_LAST_CALL:
        assert last == ()
        return
    rule = lc.BATCH_ON_LAST_CALL[status]
    by_outcomes = BatchStatus.COMPLETED if completed else BatchStatus.FAILED
    end = by_outcomes if rule is lc.BatchEnd.BY_OUTCOMES else BatchStatus(rule)
    assert last == (lc.FinishBatch(end), lc.WriteEvent(lc.BATCH_EVENT_OF[end], lc.Payload.BATCH))


def test_a_cancelled_batch_ends_cancelled_whatever_its_outcomes() -> None:
    effects = lc.on_call_final(lc.BatchCounts(BatchStatus.CANCELLED, 3, 2, 0, 1))
    assert effects == (
        lc.FinishBatch(BatchStatus.CANCELLED),
        lc.WriteEvent(EventType.BATCH_CANCELLED, lc.Payload.BATCH),
    )


def test_cancelled_calls_count_toward_the_end() -> None:
    effects = lc.on_call_final(lc.BatchCounts(BatchStatus.RUNNING, 3, 1, 1, 1))
    assert effects[0] == lc.FinishBatch(BatchStatus.COMPLETED)


@pytest.mark.parametrize("status", list(CallStatus))
def test_a_cancel_ends_only_calls_not_yet_dialed(status: CallStatus) -> None:
    call, effects = lc.call_move(lc.Call(status, 1), lc.Trigger.CANCEL, None, None)
    if status in (CallStatus.QUEUED, CallStatus.SCHEDULED):
        assert call.status is CallStatus.CANCELLED
        assert effects == (lc.FinishCall(CallStatus.CANCELLED, Outcome.CANCELLED, None), lc.ReleaseSlot())
    else:
        assert (call, effects) == (lc.Call(status, 1), ())


@pytest.mark.parametrize("status", list(CallStatus))
def test_a_hangup_ends_a_live_call_cancelled_and_nothing_else(status: CallStatus) -> None:
    call, effects = lc.call_move(lc.Call(status, 1), lc.Trigger.HANG_UP, None, None)
    assert call.status is (CallStatus.CANCELLED if status in LIVE_STATUSES else status)
    assert bool(effects) == (status in LIVE_STATUSES)


def test_a_cancelled_call_writes_no_call_event() -> None:
    assert not [e for e in lc.finish(Outcome.CANCELLED, None) if isinstance(e, lc.WriteEvent)]


def test_the_end_of_an_attempt_needs_the_attempt_and_the_batch() -> None:
    with pytest.raises(ValueError, match="attempt"):
        lc.call_move(lc.Call(CallStatus.RINGING, 1), lc.Trigger.ATTEMPT_ENDED, None, None)


def test_a_retry_keeps_the_error_of_the_ending_event() -> None:
    step = apply(
        attempt(),
        live_call(AttemptStatus.DIALING),
        event(AttemptStatus.RINGING, error="slow line"),
        event(AttemptStatus.ENDED),
        batch=THREE_TRIES,
    )
    assert step.attempt.error == "slow line"
    retry = next(e for e in step.effects if isinstance(e, lc.ScheduleRetry))
    assert retry.error is None


@pytest.mark.parametrize("status", list(CallStatus))
def test_a_suppressed_number_ends_only_calls_not_yet_dialed_failed_suppressed(status: CallStatus) -> None:
    call, effects = lc.call_move(lc.Call(status, 0), lc.Trigger.SUPPRESS, None, None)
    if status in (CallStatus.QUEUED, CallStatus.SCHEDULED):
        assert call.status is CallStatus.FAILED
        assert effects == (
            lc.FinishCall(CallStatus.FAILED, Outcome.SUPPRESSED, None),
            lc.WriteEvent(EventType.CALL_FAILED, lc.Payload.CALL),
            lc.ReleaseSlot(),
        )
    else:
        assert (call, effects) == (lc.Call(status, 0), ())


def test_a_suppressed_call_cannot_be_retried() -> None:
    with pytest.raises(ValueError, match="retry_on"):
        RetryPolicy(max_attempts=2, retry_on=frozenset({Outcome.SUPPRESSED}))


@pytest.mark.parametrize("status", list(CallStatus))
def test_an_opt_out_ends_every_unfinished_call_failed_opted_out_and_frees_its_slot(status: CallStatus) -> None:
    call, effects = lc.call_move(lc.Call(status, 1), lc.Trigger.OPT_OUT, None, None)
    if status in FINAL_STATUSES:
        assert (call, effects) == (lc.Call(status, 1), ())  # a call already over keeps its outcome
    else:
        assert call.status is CallStatus.FAILED
        assert effects == (
            lc.FinishCall(CallStatus.FAILED, Outcome.OPTED_OUT, None),
            lc.WriteEvent(EventType.CALL_FAILED, lc.Payload.CALL),
            lc.ReleaseSlot(),
        )


def test_an_opted_out_call_cannot_be_retried() -> None:
    with pytest.raises(ValueError, match="retry_on"):
        RetryPolicy(max_attempts=2, retry_on=frozenset({Outcome.OPTED_OUT}))


LONDON_MORNING = parse_calling_window({"start": "09:00", "end": "12:06", "timezone": "Europe/London"})


@pytest.mark.parametrize(
    ("offset", "due"),
    [
        (timedelta(0), datetime(2026, 1, 1, 12, 5, tzinfo=UTC) + timedelta(seconds=59)),  # inside: unchanged
        (timedelta(seconds=61), datetime(2026, 1, 2, 9, 0, tzinfo=UTC) - timedelta(seconds=61)),
        (timedelta(hours=1), datetime(2026, 1, 2, 8, 0, tzinfo=UTC)),  # read on a clock an hour ahead
    ],
)
def test_a_retry_outside_the_calls_window_is_pushed_to_its_next_opening(offset: timedelta, due: datetime) -> None:
    window = CallWindow(LONDON_MORNING, (), offset)
    batch = lc.Batch(BatchStatus.RUNNING, RetryPolicy(max_attempts=3, delay=59), window=window)
    attempt = ended_at(1)
    effects = lc.end_of_attempt(attempt, batch, error=None)
    assert effects == (lc.ScheduleRetry(due, None), lc.ReleaseSlot())


def test_a_retry_whose_window_opens_after_the_batch_expires_ends_expired() -> None:
    window = CallWindow(LONDON_MORNING, (), timedelta(hours=1))
    batch = lc.Batch(
        BatchStatus.RUNNING,
        RetryPolicy(max_attempts=3, delay=59),
        expires_at=datetime(2026, 1, 2, 7, tzinfo=UTC),
        window=window,
    )
    assert lc.end_of_attempt(ended_at(1), batch, error=None)[0] == lc.FinishCall(
        CallStatus.FAILED, Outcome.EXPIRED, None
    )


@pytest.mark.parametrize("status", list(CallStatus))
def test_a_call_given_a_slot_outside_its_window_waits_scheduled_and_nothing_else_moves(status: CallStatus) -> None:
    call, effects = lc.call_move(lc.Call(status, 0), lc.Trigger.WINDOW_CLOSED, None, None)
    if status in (CallStatus.QUEUED, CallStatus.SCHEDULED):
        assert (call.status, effects) == (CallStatus.SCHEDULED, (lc.SetCallStatus(CallStatus.SCHEDULED),))
    else:
        assert (call, effects) == (lc.Call(status, 0), ())


def test_a_machine_keeps_the_call_live_and_its_end_is_machine_however_reported() -> None:
    step = apply(
        attempt(),
        live_call(AttemptStatus.DIALING),
        event(AttemptStatus.ANSWERED),
        event(AttemptStatus.MACHINE),
        batch=ONE_TRY,
    )
    assert step.call.status is CallStatus.IN_PROGRESS and step.attempt.status is AttemptStatus.MACHINE
    assert not [e for e in step.effects if isinstance(e, lc.ReleaseSlot)]  # its slot is held
    ended = apply(step.attempt, step.call, event(AttemptStatus.ENDED, outcome=Outcome.COMPLETED), batch=ONE_TRY)
    assert ended.attempt.outcome is Outcome.MACHINE
    assert lc.FinishCall(CallStatus.FAILED, Outcome.MACHINE, None) in ended.effects
