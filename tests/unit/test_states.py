"""Statuses, outcomes and the moves between them."""

from __future__ import annotations

import itertools
import json

import pytest

from batchcalls.domain.states import (
    ATTEMPT_TO_CALL_STATUS,
    FINAL_STATUSES,
    LIVE_STATUSES,
    PENDING_STATUSES,
    RETRYABLE_OUTCOMES,
    AttemptStatus,
    BatchStatus,
    CallStatus,
    Outcome,
    attempt_may_move,
    batch_final_status,
    final_status,
)

ORDER = [AttemptStatus.DIALING, AttemptStatus.RINGING, AttemptStatus.ANSWERED, AttemptStatus.ENDED]


@pytest.mark.parametrize(("current", "new"), list(itertools.combinations(ORDER, 2)))
def test_attempts_move_forward_skipping_allowed(current: AttemptStatus, new: AttemptStatus) -> None:
    assert attempt_may_move(current, new)


@pytest.mark.parametrize("status", ORDER)
def test_a_repeated_event_is_a_no_op(status: AttemptStatus) -> None:
    assert not attempt_may_move(status, status)


@pytest.mark.parametrize(("new", "current"), list(itertools.combinations(ORDER, 2)))
def test_an_out_of_order_event_is_a_no_op(current: AttemptStatus, new: AttemptStatus) -> None:
    assert not attempt_may_move(current, new)


def test_nothing_moves_an_ended_attempt() -> None:
    assert not any(attempt_may_move(AttemptStatus.ENDED, new) for new in AttemptStatus)


def test_events_replayed_in_any_order_end_where_the_furthest_one_says() -> None:
    for events in itertools.permutations(ORDER):
        state = AttemptStatus.DIALING
        applied = []
        for event in events + events:  # each one delivered twice
            if attempt_may_move(state, event):
                state = event
                applied.append(event)
        assert state is AttemptStatus.ENDED
        assert applied == sorted(applied, key=ORDER.index)  # only ever forward
        assert len(applied) == len(set(applied))  # each applied at most once


def test_final_status_of_each_outcome() -> None:
    assert final_status(Outcome.COMPLETED) is CallStatus.COMPLETED
    assert final_status(Outcome.CANCELLED) is CallStatus.CANCELLED
    for outcome in (
        Outcome.BUSY,
        Outcome.NO_ANSWER,
        Outcome.FAILED,
        Outcome.REJECTED,
        Outcome.MACHINE,
        Outcome.INVALID_NUMBER,
    ):
        assert final_status(outcome) is CallStatus.FAILED
    assert all(final_status(outcome) in FINAL_STATUSES for outcome in Outcome)


def test_live_pending_and_final_statuses_split_every_call_status() -> None:
    groups = [LIVE_STATUSES, PENDING_STATUSES, FINAL_STATUSES]
    assert set().union(*groups) == set(CallStatus)
    assert sum(len(group) for group in groups) == len(CallStatus)
    assert {CallStatus.DIALING, CallStatus.RINGING, CallStatus.IN_PROGRESS} == LIVE_STATUSES
    assert {CallStatus.QUEUED, CallStatus.SCHEDULED} == PENDING_STATUSES


def test_live_attempt_statuses_map_to_live_call_statuses() -> None:
    assert set(ATTEMPT_TO_CALL_STATUS.values()) == LIVE_STATUSES
    assert ATTEMPT_TO_CALL_STATUS[AttemptStatus.ANSWERED] is CallStatus.IN_PROGRESS
    assert AttemptStatus.ENDED not in ATTEMPT_TO_CALL_STATUS


def test_only_unsuccessful_dial_outcomes_may_be_retried() -> None:
    retryable = {Outcome.BUSY, Outcome.NO_ANSWER, Outcome.FAILED, Outcome.REJECTED, Outcome.MACHINE}
    assert retryable == RETRYABLE_OUTCOMES


def test_status_values_are_the_public_names() -> None:
    assert [s.value for s in CallStatus] == [
        "queued",
        "scheduled",
        "dialing",
        "ringing",
        "in_progress",
        "completed",
        "failed",
        "cancelled",
    ]
    assert CallStatus("in_progress") is CallStatus.IN_PROGRESS
    assert json.dumps([CallStatus.COMPLETED, Outcome.NO_ANSWER]) == '["completed", "no_answer"]'
    assert {o.value for o in Outcome} == {
        "completed",
        "busy",
        "no_answer",
        "failed",
        "rejected",
        "machine",
        "invalid_number",
        "suppressed",
        "cancelled",
        "expired",
        "opted_out",
        "destination_not_allowed",
    }


def test_a_batch_with_no_success_failed() -> None:
    assert batch_final_status(0) is BatchStatus.FAILED
    assert batch_final_status(1) is BatchStatus.COMPLETED
    assert batch_final_status(1000) is BatchStatus.COMPLETED
