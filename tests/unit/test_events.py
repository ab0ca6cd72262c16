from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from batchcalls.domain.events import (
    MAX_BACKOFF_SECONDS,
    MIN_DELIVERY_RETRY_PERIOD,
    EventType,
    backoff_seconds,
    make_event,
    new_event_id,
)
from batchcalls.domain.timefmt import isoformat_ms


def test_event_types_are_the_contract_names() -> None:
    assert {t.value for t in EventType} == {
        "batch.started",
        "batch.call_completed",
        "batch.call_failed",
        "batch.completed",
        "batch.failed",
        "batch.cancelled",
        "batch.paused",
        "batch.resumed",
    }


def test_new_event_id_shape_and_uniqueness() -> None:
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"evt_[0-9a-f]{24}", i) for i in ids)


def test_make_event_envelope_is_json_ready() -> None:
    created = datetime(2026, 11, 23, 13, 43, 34, 123456, tzinfo=UTC)
    data = {"batch_id": "b_1", "total_calls": 2}
    event = make_event(EventType.BATCH_STARTED, "b_1", data, created)

    assert set(event) == {"id", "type", "created_at", "batch_id", "data"}
    assert event["type"] == "batch.started"
    assert event["created_at"] == "2026-11-23T13:43:34.123Z"
    assert event["batch_id"] == "b_1"
    assert event["data"] == data and event["data"] is not data
    assert re.fullmatch(r"evt_[0-9a-f]{24}", event["id"])
    assert json.loads(json.dumps(event)) == event


def test_make_event_accepts_type_string_and_given_id_but_not_unknown_type() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    event = make_event("batch.call_failed", "b_1", {}, created, event_id="evt_x")
    assert event["type"] == "batch.call_failed" and event["id"] == "evt_x"
    with pytest.raises(ValueError):
        make_event("batch.exploded", "b_1", {}, created)


def test_isoformat_ms_converts_to_utc_and_truncates() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert isoformat_ms(datetime(2026, 1, 1, 2, 0, 0, 999999, tzinfo=plus_two)) == ("2026-01-01T00:00:00.999Z")
    assert isoformat_ms(datetime(2026, 1, 1, 0, 0, 0)) == "2026-01-01T00:00:00.000Z"
    assert isoformat_ms(None) is None


def test_backoff_doubles_from_one_second_and_caps() -> None:
    def mid() -> float:
        return 0.5  # no jitter

    assert [backoff_seconds(n, mid) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert backoff_seconds(13, mid) == MAX_BACKOFF_SECONDS
    assert backoff_seconds(10_000, mid) == MAX_BACKOFF_SECONDS


def test_backoff_jitter_is_plus_or_minus_twenty_percent() -> None:
    assert backoff_seconds(4, lambda: 0.0) == pytest.approx(8 * 0.8)
    assert backoff_seconds(4, lambda: 0.999999) == pytest.approx(8 * 1.2, rel=1e-5)
    assert backoff_seconds(100, lambda: 0.0) == pytest.approx(3600 * 0.8)


def test_backoff_retries_span_a_day_with_a_bounded_count() -> None:
    waited, attempts = 0.0, 0
    while waited < MIN_DELIVERY_RETRY_PERIOD.total_seconds():
        attempts += 1
        waited += backoff_seconds(attempts, lambda: 0.0)  # shortest waits: most attempts
    assert attempts < 50


@pytest.mark.parametrize("attempts", [0, -1, True])
def test_backoff_refuses_nonsense(attempts: int) -> None:
    with pytest.raises(ValueError):
        backoff_seconds(attempts)
