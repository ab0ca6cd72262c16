"""Expiry and the harder cases of control on the real stack (worker processes, Redis, Postgres,
the simulator): a batch whose `expires_at` passes mid-run, a cancel racing the last call's end,
and a cancel while a worker is SIGKILLed. Each is checked against the simulator's create log
and the outbox's events; assertions wait on conditions with deadlines, never on durations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from batchcalls.ops.cli import main as cli
from tests.integration.test_control import body, call_ids, command, creates, event_types, ok, wait_for
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

CALL_SECONDS = 3.0
TERMINAL = ("batch.completed", "batch.failed", "batch.cancelled")


@pytest.fixture(scope="module")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        running = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("control-faults")),
            BATCHCALLS_SIM_RING_SECONDS="0.2",
            BATCHCALLS_SIM_CALL_SECONDS=str(CALL_SECONDS),
        )
        try:
            yield running
        finally:
            running.stop()


def terminal_events(stack: Stack, batch_id: str) -> list[str]:
    return [t for t in event_types(stack, batch_id) if t in TERMINAL]


def counts_add_up(final: dict[str, Any], total: int) -> bool:
    return final["completed_calls"] + final["failed_calls"] + final["cancelled_calls"] == total


def parse(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_a_batch_expiring_mid_run_creates_nothing_after_it_and_ends_its_waiting_calls_expired(stack: Stack) -> None:
    # 10 calls of about 3.2 s, two at a time: about 16 s of calls; it expires after about 6 s.
    expires = datetime.now(UTC) + timedelta(seconds=6)
    submitted = stack.submit({**body(10, 2, 7000), "expires_at": expires.isoformat()})
    batch_id = submitted["batch_id"]
    assert parse(submitted["expires_at"]) == pytest.approx(expires.timestamp(), abs=0.001)
    ids = call_ids(stack, batch_id)
    final = stack.wait_finished(batch_id, timeout=60)
    made = creates(stack, ids)
    assert made and [c for c in made if c["at"] >= expires.timestamp()] == []
    placed = {c["call_id"] for c in made}
    calls = stack.all_calls(batch_id)
    waiting = [c for c in calls if c["id"] not in placed]
    assert waiting, "the batch expired with no call waiting: nothing was shown"
    assert {(c["status"], c["outcome"], len(c["attempts"])) for c in waiting} == {("failed", "expired", 0)}
    # The calls live at the expiry finished as the network decided, after it.
    live = [c for c in calls if c["id"] in placed]
    assert {(c["status"], c["outcome"]) for c in live} == {("completed", "completed")}
    assert any(parse(c["attempts"][-1]["ended_at"]) > expires.timestamp() for c in live)
    assert final["status"] == "completed" and final["expires_at"] is not None
    assert final["completed_calls"] == len(placed) and final["failed_calls"] == len(waiting)
    assert counts_add_up(final, 10)
    assert terminal_events(stack, batch_id) == ["batch.completed"]


def test_a_batch_that_expires_while_paused_ends_at_once(stack: Stack) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    batch_id = stack.submit({**body(6, 1, 7100), "expires_at": expires.isoformat()})["batch_id"]
    ok(stack, batch_id, "pause")
    final = stack.wait_finished(batch_id, timeout=30)
    made = {c["call_id"] for c in creates(stack, call_ids(stack, batch_id))}
    expired = [c for c in stack.all_calls(batch_id) if c["outcome"] == "expired"]
    assert len(expired) == 6 - len(made) > 0
    assert counts_add_up(final, 6) and len(terminal_events(stack, batch_id)) == 1
    env = {"BATCHCALLS_API_URL": stack.api_url, "BATCHCALLS_API_KEY": stack.api_key, "COLUMNS": "120"}
    shown = CliRunner().invoke(cli, ["status", batch_id], env=env)
    assert shown.exit_code == 0 and "expires_at" in shown.output and final["expires_at"][:19] in shown.output


@pytest.mark.parametrize(
    ("value", "problem"),
    [("2020-01-01T00:00:00Z", "in the past"), ("2099-01-01T00:00:00", "no UTC offset"), ("soon", "not an ISO")],
)
def test_a_bad_expires_at_is_a_422_naming_it(stack: Stack, value: str, problem: str) -> None:
    response = requests.post(
        f"{stack.api_url}/v1/batches",
        json={**body(1, 1, 7200), "expires_at": value},
        headers=stack.headers(),
        timeout=30,
    )
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert list(details) == ["expires_at"] and details["expires_at"][0].startswith(problem)


def test_a_submit_replayed_after_its_expires_at_gets_its_batch_not_a_422(stack: Stack) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1)
    sent = {**body(2, 1, 7300), "expires_at": expires.isoformat()}
    headers = stack.headers(**{"Idempotency-Key": "replay-after-expiry"})
    first = requests.post(f"{stack.api_url}/v1/batches", json=sent, headers=headers, timeout=30)
    assert first.status_code == 202, first.text
    stack.wait_finished(first.json()["batch_id"], timeout=30)
    wait_for(lambda: datetime.now(UTC) > expires, "the expiry passed")
    again = requests.post(f"{stack.api_url}/v1/batches", json=sent, headers=headers, timeout=30)
    assert again.status_code == 202, again.text
    assert again.json()["batch_id"] == first.json()["batch_id"] and again.headers["Idempotent-Replayed"] == "true"
    # Another body under the same key is still a conflict, checked before the body is.
    other = requests.post(f"{stack.api_url}/v1/batches", json={**sent, "concurrency": 2}, headers=headers, timeout=30)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"


def test_a_cancel_racing_the_last_calls_end_gives_one_terminal_event(stack: Stack) -> None:
    # One busy call a batch (it ends when its ringing does, 0.2 s after its create), cancelled
    # at moments spread over that end: before it, at it, after it.
    for offset in range(10):
        batch_id = stack.submit(body(1, 1, 7300 + offset * 10, last_digit=1))["batch_id"]
        ids = call_ids(stack, batch_id)
        wait_for(lambda ids=ids: creates(stack, ids), "the create")  # type: ignore[misc]
        time.sleep(offset * 0.04)  # spreads the cancels over the call's end; nothing is asserted on it
        answer = command(stack, batch_id, "cancel")
        assert answer.status_code in (200, 409), answer.text
        if answer.status_code == 409:  # the call ended first and finished the batch
            assert answer.json()["error"]["code"] == "invalid_state"
        final = stack.wait_finished(batch_id, timeout=30)
        assert counts_add_up(final, 1)
        assert final["status"] == ("cancelled" if answer.status_code == 200 else "failed")
        wait_for(lambda b=batch_id: terminal_events(stack, b), "the terminal event")  # type: ignore[misc]
        assert len(terminal_events(stack, batch_id)) == 1


def test_a_cancel_with_a_worker_killed_mid_way_ends_every_call_once(stack: Stack) -> None:
    batch_id = stack.submit(body(30, 6, 7500))["batch_id"]
    ids = call_ids(stack, batch_id)
    wait_for(lambda: len(creates(stack, ids)) >= 6, "six creates")
    _, answered = ok(stack, batch_id, "cancel", {"hangup_live_calls": True})
    # The hangups are the workers' tasks: one of the two workers dies while they run.
    stack.kill_worker("w1")
    stack.start_worker("w1")
    final = stack.wait_finished(batch_id, timeout=90)
    assert final["status"] == "cancelled" and counts_add_up(final, 30)
    assert [c for c in creates(stack, ids) if c["at"] >= answered] == []
    calls = stack.all_calls(batch_id)
    assert {c["status"] for c in calls} <= {"completed", "failed", "cancelled"}
    assert sorted(c["call_id"] for c in creates(stack, ids)) == sorted({c["call_id"] for c in creates(stack, ids)})
    wait_for(lambda: terminal_events(stack, batch_id), "the terminal event")
    assert terminal_events(stack, batch_id) == ["batch.cancelled"]
