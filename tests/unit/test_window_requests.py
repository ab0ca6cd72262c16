"""The calling windows of a batch request: named problems, and when each call's window opens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchcalls.domain.errors import InvalidRequest
from batchcalls.domain.models import NewBatch, NewCall
from batchcalls.domain.window_requests import openings, requested_windows
from batchcalls.domain.window_spec import parse_calling_window

NOW = datetime(2027, 1, 13, 16, 59, 20, tzinfo=UTC)  # a Wednesday: 11:59 in New York, 08:59 in Los Angeles
NINE_TO_EIGHT = parse_calling_window({"start": "09:00", "end": "20:00"})


def call(number: str, window: dict[str, str] | None = None) -> NewCall:
    own = parse_calling_window(window) if window is not None else None
    return NewCall(number, {"steps": []}, None, 5, calling_window=own)


def test_each_call_opens_where_its_callee_is_and_a_calls_own_window_replaces_the_batchs() -> None:
    batch = NewBatch(
        calls=(
            call("+12125550100"),  # New York: open
            call("+12135550100"),  # Los Angeles: opens at 09:00 PST
            call("+12135550101", {"start": "08:00", "end": "09:00"}),  # its own window: open
            call("+919830000000"),  # Kolkata: 22:29, opens 09:00 IST the next day
        ),
        calling_window=NINE_TO_EIGHT,
    )
    assert openings(batch, NOW) == [
        None,
        datetime(2027, 1, 13, 17, 0, tzinfo=UTC),
        None,
        datetime(2027, 1, 14, 3, 30, tzinfo=UTC),
    ]
    # On a clock an hour ahead, Los Angeles is open already and its opening reads in real time.
    assert openings(batch, NOW, timedelta(hours=1))[1] is None
    assert openings(NewBatch(calls=(call("+12125550100"),)), NOW) == []  # no window: nothing to work out


def test_problems_are_named_by_the_requests_paths() -> None:
    with pytest.raises(InvalidRequest) as raised:
        requested_windows(
            {"calling_window": {"start": "25:00", "end": "20:00"}},
            [{"calling_window": [{"start": "09:00", "end": "10:00", "timezone": "Mars/Olympus"}]}, {}],
        )
    assert set(raised.value.details) == {"calling_window.start", "calls[0].calling_window[0].timezone"}
