"""Control of a running batch on the real stack (worker processes, Redis, Postgres, the
simulator): pause, resume and cancel, each against the simulator's logs of creates and hangups
and the outbox's events. Assertions wait on conditions with deadlines, never on durations."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from click.testing import CliRunner

from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.tenants import create_key
from batchcalls.ops.cli import main as cli
from tests.integration.test_pipeline import number
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

CALL_SECONDS = 3.0  # long enough that a batch has live calls when it is paused or cancelled


@pytest.fixture(scope="module")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        running = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("control")),
            BATCHCALLS_SIM_RING_SECONDS="0.2",
            BATCHCALLS_SIM_CALL_SECONDS=str(CALL_SECONDS),
        )
        try:
            yield running
        finally:
            running.stop()


def body(calls: int, concurrency: int, first: int, last_digit: int = 0) -> dict[str, Any]:
    return {
        "calls": [{"phone_number": number(first + i, last_digit), "script": {"text": "Hi"}} for i in range(calls)],
        "concurrency": concurrency,
    }


def command(stack: Stack, batch_id: str, name: str, payload: dict[str, Any] | None = None, key: str | None = None):  # type: ignore[no-untyped-def]
    return requests.post(
        f"{stack.api_url}/v1/batches/{batch_id}/{name}",
        json=payload,
        headers={"Authorization": f"Bearer {key or stack.api_key}"},
        timeout=60,
    )


def ok(stack: Stack, batch_id: str, name: str, payload: dict[str, Any] | None = None) -> tuple[dict[str, Any], float]:
    """The command's answer, and the time it was received."""
    response = command(stack, batch_id, name, payload)
    answered = time.time()
    assert response.status_code == 200, response.text
    return response.json(), answered


def creates(stack: Stack, batch_ids: set[str]) -> list[dict[str, Any]]:
    return [c for c in stack.sim_creates() if c["call_id"] in batch_ids]


def call_ids(stack: Stack, batch_id: str) -> set[str]:
    return {str(c["id"]) for c in stack.all_calls(batch_id)}


def wait_for(condition: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.time() + timeout
    while not (value := condition()):
        assert time.time() < deadline, f"{what} not seen within {timeout}s"
        time.sleep(0.05)
    return value


def event_types(stack: Stack, batch_id: str) -> list[str]:
    conn = psycopg2.connect(stack.env["DATABASE_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT type FROM events WHERE batch_id = %s ORDER BY seq", (batch_id,))
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def test_pause_stops_creates_and_resume_finishes_the_batch(stack: Stack) -> None:
    batch_id = stack.submit(body(12, 3, 1000))["batch_id"]
    ids = call_ids(stack, batch_id)
    wait_for(lambda: len(creates(stack, ids)) >= 3, "three creates")
    paused, paused_at = ok(stack, batch_id, "pause")
    assert paused["status"] == "paused"
    again, _ = ok(stack, batch_id, "pause")  # idempotent
    assert again["status"] == "paused"
    # The live calls end normally and free their slots, which a running batch would fill at once.
    wait_for(lambda: stack.status(batch_id)["in_progress"] == 0, "the live calls' end", timeout=30)
    held = stack.status(batch_id)
    assert held["status"] == "paused" and held["pending"] > 0
    resume_sent = time.time()
    resumed, _ = ok(stack, batch_id, "resume")
    assert resumed["status"] == "running"
    final = stack.wait_finished(batch_id, timeout=90)
    assert final["status"] == "completed" and final["completed_calls"] == 12
    made = creates(stack, ids)
    during = [c for c in made if paused_at <= c["at"] <= resume_sent]
    assert during == [], f"{len(during)} creates began after the pause answered"
    assert sorted(c["call_id"] for c in made) == sorted(ids)  # each call created once
    types = event_types(stack, batch_id)
    assert types.count("batch.paused") == 1 and types.count("batch.resumed") == 1
    assert types.index("batch.paused") < types.index("batch.resumed") < types.index("batch.completed")


def test_cancel_lets_live_calls_finish_and_ends_the_batch_cancelled_once(stack: Stack) -> None:
    batch_id = stack.submit(body(20, 3, 2000))["batch_id"]
    ids = call_ids(stack, batch_id)
    wait_for(lambda: len(creates(stack, ids)) >= 3, "three creates")
    cancelled, answered = ok(stack, batch_id, "cancel")
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is None
    assert cancelled["in_progress"] > 0 and cancelled["pending"] == 0
    final = stack.wait_finished(batch_id, timeout=60)
    made = creates(stack, ids)
    assert [c for c in made if c["at"] >= answered] == []
    assert final["status"] == "cancelled"
    assert final["completed_calls"] == len(made)  # the live calls finished as the network decided
    assert final["cancelled_calls"] == 20 - len(made)
    assert final["completed_calls"] + final["failed_calls"] + final["cancelled_calls"] == 20
    assert {c["outcome"] for c in stack.all_calls(batch_id) if c["id"] not in {m["call_id"] for m in made}} == {
        "cancelled"
    }
    assert [c for c in stack.sim_hangups() if c["call_id"] in ids] == []
    types = event_types(stack, batch_id)
    assert types.count("batch.cancelled") == 1
    assert "batch.completed" not in types and "batch.failed" not in types


def test_cancel_with_hangup_ends_live_calls_cancelled_through_the_provider(stack: Stack) -> None:
    batch_id = stack.submit(body(10, 3, 3000))["batch_id"]
    ids = call_ids(stack, batch_id)
    wait_for(lambda: len(creates(stack, ids)) >= 3, "three creates")
    _, answered = ok(stack, batch_id, "cancel", {"hangup_live_calls": True})
    final = stack.wait_finished(batch_id, timeout=30)
    made = {c["call_id"] for c in creates(stack, ids)}
    assert [c for c in creates(stack, ids) if c["at"] >= answered] == []
    assert final["status"] == "cancelled" and final["cancelled_calls"] == 10
    assert {c["status"] for c in stack.all_calls(batch_id)} == {"cancelled"}
    # Every live call was hung up, and the simulator ended it at once (its attempt ended before
    # its own end, CALL_SECONDS after the answer).
    hung = wait_for(
        lambda: {c["call_id"] for c in stack.sim_hangups() if c["call_id"] in ids} >= made and made, "hangups"
    )
    assert hung

    def attempts_ended() -> list[dict[str, Any]] | None:
        got = stack.all_calls(batch_id)
        return got if all(a["ended_at"] for c in got for a in c["attempts"]) else None

    calls = wait_for(attempts_ended, "the hung-up attempts' end", timeout=30)
    assert {a["outcome"] for c in calls for a in c["attempts"]} == {"cancelled"}
    types = event_types(stack, batch_id)
    assert types.count("batch.cancelled") == 1 and "batch.completed" not in types


def test_concurrent_cancels_while_calls_end_give_one_terminal_event(stack: Stack) -> None:
    # Busy numbers: every attempt ends when its ringing does, so calls end all the time.
    batch_id = stack.submit(body(60, 6, 4000, last_digit=1))["batch_id"]
    ids = call_ids(stack, batch_id)
    wait_for(lambda: len(creates(stack, ids)) >= 8, "eight creates")
    answers: list[int] = []
    start = threading.Barrier(4)

    def cancel(hang_up: bool) -> None:
        start.wait()
        answers.append(command(stack, batch_id, "cancel", {"hangup_live_calls": hang_up}).status_code)

    threads = [threading.Thread(target=cancel, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 4
    final = stack.wait_finished(batch_id, timeout=30)
    assert final["status"] == "cancelled"
    assert final["completed_calls"] + final["failed_calls"] + final["cancelled_calls"] == 60
    types = event_types(stack, batch_id)
    assert [t for t in types if t in ("batch.cancelled", "batch.completed", "batch.failed")] == ["batch.cancelled"]


def test_a_cancelled_batch_refuses_pause_and_resume_and_another_tenant_sees_none(stack: Stack) -> None:
    batch_id = stack.submit(body(5, 1, 5000))["batch_id"]
    _, other_key = create_key(Database(stack.env["DATABASE_URL"]), "other-" + batch_id[-6:])
    for name in ("pause", "resume", "cancel"):
        response = command(stack, batch_id, name, key=other_key)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    bad = command(stack, batch_id, "cancel", {"hangup": True})
    assert bad.status_code == 422 and "hangup" in bad.json()["error"]["details"]
    bad = command(stack, batch_id, "cancel", {"hangup_live_calls": "yes"})
    assert bad.status_code == 422 and "hangup_live_calls" in bad.json()["error"]["details"]
    ok(stack, batch_id, "cancel")
    again, _ = ok(stack, batch_id, "cancel")  # idempotent
    assert again["status"] == "cancelled"
    for name in ("resume", "pause"):
        refused = command(stack, batch_id, name)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "invalid_state"
    stack.wait_finished(batch_id, timeout=30)
    assert event_types(stack, batch_id).count("batch.cancelled") == 1


def test_the_cli_pauses_resumes_and_cancels(stack: Stack) -> None:
    batch_id = stack.submit(body(6, 1, 6000))["batch_id"]
    env = {"BATCHCALLS_API_URL": stack.api_url, "BATCHCALLS_API_KEY": stack.api_key}
    runner = CliRunner()
    paused = runner.invoke(cli, ["pause", batch_id], env=env)
    assert paused.exit_code == 0 and "paused" in paused.output
    shown = runner.invoke(cli, ["status", batch_id], env=env)
    assert shown.exit_code == 0 and "paused" in shown.output
    resumed = runner.invoke(cli, ["resume", batch_id], env=env)
    assert resumed.exit_code == 0 and ("running" in resumed.output or "queued" in resumed.output)
    cancelled = runner.invoke(cli, ["cancel", batch_id, "--hangup"], env=env)
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    refused = runner.invoke(cli, ["pause", batch_id], env=env)
    assert refused.exit_code != 0 and "invalid_state" in refused.output
    stack.wait_finished(batch_id, timeout=30)
