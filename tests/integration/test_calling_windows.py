"""Calling windows and contact limits on the real stack (worker processes, Redis, Postgres, the simulator), on a moved
clock: `BATCHCALLS_CLOCK_OFFSET_SECONDS` puts the stack's windows at 16:59:20 UTC on Wednesday
13 January 2027 when it starts: New York (11:59) and London (16:59) are inside 09:00-20:00, Los
Angeles (08:59) opens 40 s later, Kolkata (22:29) not before 03:30 UTC the next day. Each call is
checked against the simulator's log of creates: created only inside its own window. Assertions
wait on conditions with deadlines, never on durations."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from batchcalls.adapters.store.tenants import create_key, set_tenant_policy
from batchcalls.domain.window_spec import parse_calling_window
from batchcalls.domain.windows import is_open, zones_for_number
from tests.integration.test_control import command, creates, wait_for
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

MOVED_START = datetime(2027, 1, 13, 16, 59, 20, tzinfo=UTC)
WINDOW = {"start": "09:00", "end": "20:00"}  # every day, in the recipient's own time
NEW_YORK, LOS_ANGELES, LONDON, KOLKATA = "+12125550100", "+12135550100", "+442079460010", "+919830000000"


@dataclass
class Moved:
    stack: Stack
    offset: timedelta  # moved time = real time + offset

    def real(self, moved: datetime) -> datetime:
        return moved - self.offset

    def moved(self, real_unix: float) -> datetime:
        return datetime.fromtimestamp(real_unix, tz=UTC) + self.offset


@pytest.fixture(scope="module")
def moved(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moved]:
    offset = MOVED_START - datetime.now(UTC)
    with more_test_servers(servers) as own:
        running = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("windows")),
            BATCHCALLS_SIM_RING_SECONDS="0.1",
            BATCHCALLS_SIM_CALL_SECONDS="0.5",
            BATCHCALLS_CLOCK_OFFSET_SECONDS=str(offset.total_seconds()),
        )
        try:
            yield Moved(running, offset)
        finally:
            running.stop()


def post(stack: Stack, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{stack.api_url}/v1/batches", json=body, headers=stack.headers(), timeout=60)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_each_call_is_dialed_only_inside_its_own_window_across_three_zones(moved: Moved) -> None:
    stack = moved.stack
    numbers = (NEW_YORK, LOS_ANGELES, LONDON, KOLKATA)
    body = {
        "calls": [{"phone_number": n, "script": {"text": "Hello"}} for n in numbers],
        "concurrency": 4,
        "calling_window": WINDOW,
    }
    response = post(stack, body)
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    assert response.json()["calling_window"] == [
        {
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "exclude_dates": [],
            "timezone": "recipient",
            **WINDOW,
        }
    ]

    def by_number() -> dict[str, dict[str, Any]]:
        return {c["phone_number"]: c for c in stack.all_calls(batch_id)}

    # New York, London and then Los Angeles (at its opening) are dialed and complete.
    wait_for(
        lambda: all(by_number()[n]["status"] == "completed" for n in (NEW_YORK, LONDON, LOS_ANGELES)),
        "three calls completed",
        timeout=120,
    )
    calls = by_number()
    window = parse_calling_window(WINDOW)
    made = creates(stack, {c["id"] for c in calls.values()})
    assert {c["phone_number"] for c in made} == {NEW_YORK, LONDON, LOS_ANGELES}
    for create in made:  # each inside its callee's own window, on the moved clock
        assert is_open(window, zones_for_number(create["phone_number"]), moved.moved(create["at"])), create
    (la_create,) = [c for c in made if c["phone_number"] == LOS_ANGELES]
    assert moved.moved(la_create["at"]) >= datetime(2027, 1, 13, 17, 0, tzinfo=UTC)

    # Kolkata waits, holding no slot, for 09:00 India time the next day.
    kolkata = calls[KOLKATA]
    assert (kolkata["status"], kolkata["attempts"]) == ("scheduled", [])
    opening = moved.real(datetime(2027, 1, 14, 3, 30, tzinfo=UTC))
    assert abs((at(kolkata["next_attempt_at"]) - opening).total_seconds()) < 0.01
    status = stack.status(batch_id)
    assert (status["status"], status["pending"], status["scheduled"]) == ("running", 1, 1)
    assert command(stack, batch_id, "cancel").status_code == 200
    final = stack.wait_finished(batch_id)
    assert (final["completed_calls"], final["cancelled_calls"]) == (3, 1)


def test_a_retry_that_would_fall_after_the_window_closes_waits_for_its_next_opening(moved: Moved) -> None:
    stack = moved.stack
    # London closes at 17:00 for this call's own window: its busy first attempt's retry, 20 s
    # later, would fall after it, and waits for 09:00 London the next day.
    own_window = {"start": "09:00", "end": "17:00", "timezone": "Europe/London"}
    busy_first = "+442079460014"  # the simulator: busy on the first attempt, answered after
    body = {
        "calls": [{"phone_number": busy_first, "script": {"text": "Hello"}, "calling_window": own_window}],
        "retry_config": {"max_attempts": 3, "delay": 20, "retry_on": ["busy"]},
    }
    response = post(stack, body)
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    next_opening = moved.real(datetime(2027, 1, 14, 9, 0, tzinfo=UTC))

    def waiting() -> dict[str, Any] | None:
        (call,) = stack.all_calls(batch_id)
        return call if call["status"] == "scheduled" and call["next_attempt_at"] else None

    call = wait_for(waiting, "the call waiting for the next opening", timeout=60)
    assert abs((at(call["next_attempt_at"]) - next_opening).total_seconds()) < 0.01
    window = parse_calling_window(own_window)
    for create in creates(stack, {call["id"]}):  # at most its first attempt, inside the window
        assert is_open(window, (), moved.moved(create["at"]))
    assert [a["outcome"] for a in call["attempts"]] in ([], ["busy"])
    assert command(stack, batch_id, "cancel").status_code == 200
    stack.wait_finished(batch_id)


def test_a_bad_or_never_opening_window_is_a_422_naming_it(moved: Moved) -> None:
    stack = moved.stack
    bad = post(
        stack,
        {
            "calls": [
                {"phone_number": NEW_YORK, "script": {"text": "Hi"}, "calling_window": {"start": "9", "end": "20:00"}}
            ],
            "calling_window": [
                {"start": "09:00", "end": "09:00"},
                {"days": ["funday"], "start": "01:00", "end": "02:00"},
            ],
        },
    )
    assert bad.status_code == 422, bad.text
    details = bad.json()["error"]["details"]
    assert set(details) == {"calling_window[0].end", "calling_window[1].days[0]", "calls[0].calling_window.start"}
    # A US toll-free number may ring in any of the 42 zones of the North American plan: three
    # morning hours are never morning in all of them at once.
    refused = post(
        stack,
        {
            "calls": [{"phone_number": "+18005550100", "script": {"text": "Hi"}}],
            "calling_window": {"start": "09:00", "end": "12:00"},
        },
    )
    assert refused.status_code == 422, refused.text
    details = refused.json()["error"]["details"]
    assert list(details) == ["calls[0].phone_number"]
    assert details["calls[0].phone_number"] == [
        "its calling window never opens in all 42 time zones of the number within 400 days"
    ]


# --- contact limits --------------------------------------------------------------------------


def test_a_contact_limit_of_three_holds_across_two_batches_and_the_fourth_dial_waits(moved: Moved) -> None:
    stack = moved.stack
    name = "limited-" + secrets.token_hex(3)
    _, key = create_key(stack.db, name)
    assert set_tenant_policy(stack.db, name, {"max_dials_per_number": 3}) is not None
    headers = {"Authorization": f"Bearer {key}"}
    always_busy = "+442079460021"  # the simulator: busy at every attempt

    def submit(attempts: int) -> str:
        body = {
            "calls": [{"phone_number": always_busy, "script": {"text": "Hi"}}],
            "retry_config": {"max_attempts": attempts, "delay": 0.5, "retry_on": ["busy"]},
        }
        answer = requests.post(f"{stack.api_url}/v1/batches", json=body, headers=headers, timeout=60)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["batch_id"])

    def only_call(batch_id: str) -> dict[str, Any]:
        answer = requests.get(f"{stack.api_url}/v1/batches/{batch_id}/calls", headers=headers, timeout=60)
        (call,) = answer.json()["calls"]
        return call  # type: ignore[no-any-return]

    first = submit(2)
    wait_for(lambda: only_call(first)["status"] == "failed", "the first batch's two dials")
    second = submit(3)

    def parked() -> dict[str, Any] | None:
        call = only_call(second)
        later = call["next_attempt_at"] and at(call["next_attempt_at"]) > datetime.now(UTC) + timedelta(hours=1)
        return call if call["status"] == "scheduled" and later else None

    waiting = wait_for(parked, "the second batch's call waiting for its number's dials to free up")
    assert len(waiting["attempts"]) == 1
    made = [c for c in stack.sim_creates() if c["phone_number"] == always_busy]
    assert len(made) == 3  # two of the first batch, one of the second; the fourth waits
    # Free when the first of the three leaves the rolling day.
    assert abs(at(waiting["next_attempt_at"]).timestamp() - (min(c["at"] for c in made) + 86400)) < 1.0
    cancelled = requests.post(f"{stack.api_url}/v1/batches/{second}/cancel", headers=headers, timeout=60)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
