"""Applying provider events, the engine frees a call's slot where the lifecycle's `ReleaseSlot`
effect says so, and nowhere else: the pure state machine is the one place that decides it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from batchcalls.adapters.store.calls import Applied, EventResult
from batchcalls.domain import lifecycle
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import AttemptStatus, CallStatus, Outcome
from batchcalls.engine import Engine, Gathered
from config.settings import Settings

CALL = {"id": "call_1", "batch_id": "b1", "priority": 0, "seq": 7, "outcome": "completed"}
BATCH = {"id": "b1", "finished_at": None, "callback_url": "https://hooks.example/in", "status": "running"}


def _apply(result: EventResult) -> Gathered:
    """Apply one ended-attempt event whose store result is `result`; the Redis work it leaves."""
    engine = Engine(
        Settings(database_url="postgresql://unused", redis_url="redis://unused"),
        db=mock.MagicMock(),
        gates=mock.Mock(),
        tasks=mock.Mock(),
    )
    event = ProviderEvent("call_1", 1, AttemptStatus.ENDED, time.time(), outcome=Outcome.COMPLETED)
    work = Gathered()
    with mock.patch("batchcalls.adapters.store.calls.apply_events", return_value=[result]):
        engine.record_events([event], work)
    return work


def _final(effects: tuple[lifecycle.Effect, ...], **batch: Any) -> EventResult:
    return EventResult(Applied.FINAL, {**BATCH, **batch}, dict(CALL), effects)


def test_a_call_that_ends_frees_its_slot() -> None:
    work = _apply(_final(lifecycle.finish(Outcome.COMPLETED, None)))
    assert work.release == {"b1": ["call_1"]}
    assert work.kick == {"b1": False} and work.delay == {} and work.renew == {}


def test_the_last_call_of_a_batch_frees_its_slot_and_finishes_the_batch() -> None:
    work = _apply(_final(lifecycle.finish(Outcome.COMPLETED, None), finished_at=datetime.now(UTC)))
    assert work.release == {"b1": ["call_1"]}
    assert work.kick == {"b1": True} and work.finished == {"b1"}


def test_a_retry_parks_the_call_and_frees_its_slot() -> None:
    due = datetime.now(UTC) + timedelta(seconds=30)
    effects = (lifecycle.ScheduleRetry(due, "busy"), lifecycle.ReleaseSlot())
    work = _apply(EventResult(Applied.SCHEDULED, None, {**CALL, "status": CallStatus.SCHEDULED.value}, effects))
    assert work.release == {"b1": ["call_1"]}
    assert [(call_id, due_at) for call_id, _, due_at in work.delay["b1"]] == [("call_1", due.timestamp())]
    assert work.kick == {} and work.finished == set()


def test_no_slot_is_freed_without_a_release_slot_effect() -> None:
    """An ending the lifecycle gives without `ReleaseSlot` (a call that held no slot) frees none,
    however the store labels the event."""
    ending = tuple(e for e in lifecycle.finish(Outcome.COMPLETED, None) if not isinstance(e, lifecycle.ReleaseSlot))
    work = _apply(_final(ending))
    assert work.release == {}
    assert work.kick == {"b1": False}  # the rest of the ending still happens
