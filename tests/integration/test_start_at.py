"""`start_at` on the real stack (API, worker processes, Redis, Postgres, the simulator's log of
creates): a batch whose start is ahead is `scheduled`, none of its calls is created before it,
and it then runs to the end; pause, resume and cancel while scheduled; the 422s that name
`start_at`. Then, with an engine in this process: a scheduled batch holds no slot, a lost
wake-up is made good by the reconciler's sweep, and a repeated start changes nothing.
Assertions wait on conditions with deadlines, never on durations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from batchcalls.adapters.store.tenants import create_key
from batchcalls.domain import voices
from batchcalls.domain.commands import Command
from batchcalls.domain.validation import build_batch
from batchcalls.engine import Engine
from batchcalls.engine.reconciler import reconcile
from batchcalls.ops.cli import main as cli
from tests.integration.test_control import call_ids, command, creates, event_types, ok
from tests.integration.test_pipeline import number, ts
from tests.support.engine import ListQueue, engine_on
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

AHEAD = 4.0  # seconds from the submit to `start_at`


@pytest.fixture(scope="module")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        running = start_stack(own.database_url, own.redis_url, Path(tmp_path_factory.mktemp("start_at")))
        try:
            yield running
        finally:
            running.stop()


def iso_in(seconds: float) -> str:
    """A time `seconds` from now, in ISO 8601 with a +02:00 offset (not only UTC is read)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).astimezone(timezone(timedelta(hours=2))).isoformat()


def body(calls: int, first: int, start_at: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "calls": [{"phone_number": number(first + i, 0), "script": {"text": "Hi"}} for i in range(calls)],
        "concurrency": 2,
        **({"start_at": start_at} if start_at is not None else {}),
        **extra,
    }


def test_a_scheduled_batch_dials_nothing_before_its_start_at_then_completes(stack: Stack) -> None:
    start_at = iso_in(AHEAD)
    answer = stack.submit(body(6, 100, start_at))
    batch_id = answer["batch_id"]
    assert answer["status"] == "scheduled" and answer["pending"] == 6 and answer["in_progress"] == 0
    assert ts(answer["start_at"]) == pytest.approx(datetime.fromisoformat(start_at).timestamp(), abs=0.001)
    assert answer["start_at"].endswith("Z") and answer["started_at"] is None
    listed = requests.get(f"{stack.api_url}/v1/batches", headers=stack.headers(), timeout=30).json()["batches"]
    shown = next(b for b in listed if b["batch_id"] == batch_id)
    assert shown["start_at"] == answer["start_at"]
    env = {"BATCHCALLS_API_URL": stack.api_url, "BATCHCALLS_API_KEY": stack.api_key}
    status_cli = CliRunner().invoke(cli, ["status", batch_id], env=env)
    assert status_cli.exit_code == 0 and "start_at" in status_cli.output
    final = stack.wait_finished(batch_id, timeout=60)
    assert final["status"] == "completed" and final["completed_calls"] == 6
    made = creates(stack, call_ids(stack, batch_id))
    assert len(made) == 6
    begins = ts(final["start_at"])
    early = [c for c in made if c["at"] < begins]
    assert early == [], f"{len(early)} creates before start_at"
    assert ts(final["started_at"]) >= begins
    types = event_types(stack, batch_id)
    assert types.count("batch.started") == 1 and types[-1] == "batch.completed"


def test_a_batch_paused_while_scheduled_resumes_scheduled_then_starts_on_time(stack: Stack) -> None:
    answer = stack.submit(body(4, 200, iso_in(AHEAD + 2)))
    batch_id = answer["batch_id"]
    paused, _ = ok(stack, batch_id, "pause")
    assert paused["status"] == "paused"
    resumed, _ = ok(stack, batch_id, "resume")
    assert resumed["status"] == "scheduled"
    again, _ = ok(stack, batch_id, "resume")  # idempotent
    assert again["status"] == "scheduled"
    final = stack.wait_finished(batch_id, timeout=60)
    assert final["status"] == "completed" and final["completed_calls"] == 4
    made = creates(stack, call_ids(stack, batch_id))
    assert len(made) == 4 and min(c["at"] for c in made) >= ts(final["start_at"])
    types = event_types(stack, batch_id)
    assert types.index("batch.paused") < types.index("batch.resumed") < types.index("batch.started")


def test_cancel_while_scheduled_ends_every_call_cancelled_with_one_event(stack: Stack) -> None:
    answer = stack.submit(body(5, 400, iso_in(60)))
    batch_id = answer["batch_id"]
    cancelled, _ = ok(stack, batch_id, "cancel")
    assert cancelled["status"] == "cancelled"
    final = stack.wait_finished(batch_id, timeout=30)
    assert final["status"] == "cancelled" and final["cancelled_calls"] == final["total_calls"] == 5
    assert final["pending"] == 0 and final["completed_calls"] == final["failed_calls"] == 0
    assert {c["outcome"] for c in stack.all_calls(batch_id)} == {"cancelled"}
    assert creates(stack, call_ids(stack, batch_id)) == []  # every call is final: none can be created now
    assert event_types(stack, batch_id) == ["batch.cancelled"]
    refused = command(stack, batch_id, "resume")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "invalid_state"


def test_a_start_at_now_or_past_starts_at_once(stack: Stack) -> None:
    answer = stack.submit(body(2, 500, iso_in(-3600)))
    assert answer["status"] in {"queued", "running"} and answer["start_at"] is not None
    assert stack.wait_finished(answer["batch_id"], timeout=60)["status"] == "completed"


@pytest.mark.parametrize(
    ("start_at", "expires_in", "problem"),
    [
        ("next tuesday", None, "not an ISO 8601 date and time"),
        ("2030-01-01T09:00:00", None, "no UTC offset"),
        (60.0, 60.0, "not before expires_at"),
        (120.0, 60.0, "not before expires_at"),
        (1700000000, None, "Not a valid string."),
    ],
)
def test_a_bad_start_at_is_a_422_naming_it(stack: Stack, start_at: Any, expires_in: float | None, problem: str) -> None:
    given = body(1, 600, None)
    now = datetime.now(UTC)
    if expires_in is not None:
        given["expires_at"] = (now + timedelta(seconds=expires_in)).isoformat()
        given["start_at"] = (now + timedelta(seconds=start_at)).isoformat()
    else:
        given["start_at"] = start_at
    response = requests.post(f"{stack.api_url}/v1/batches", json=given, headers=stack.headers(), timeout=30)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["details"] == {"start_at": [problem]}


# -- An engine in this process, its task queue kept in lists -------------------------------------


@pytest.fixture
def engine(servers: TestServers) -> Iterator[Engine]:
    with engine_on(servers) as built:
        yield built


def _submit(engine: Engine, start_in: float) -> tuple[int, str]:
    """A batch of 4 calls at concurrency 2 starting in `start_in` seconds: (tenant id, batch id)."""
    tenant, _ = create_key(engine.db, "start-at-test")
    given = {
        "calls": [{"phone_number": f"+44207946{i:04d}", "script": {"text": "Hi"}} for i in range(4)],
        "concurrency": 2,
        "start_at": (datetime.now(UTC) + timedelta(seconds=start_in)).isoformat(),
    }
    batch = build_batch(given, max_concurrency=10, voices=voices.voice_catalog(), now=datetime.now(UTC))
    batch_id, created = engine.submit(tenant, batch, None, given)
    assert created
    return tenant.id, batch_id


def _start_in(engine: Engine, batch_id: str, seconds: float) -> None:
    with engine.db.transaction() as cur:
        cur.execute(
            "UPDATE batches SET start_at = clock_timestamp() + make_interval(secs => %s) WHERE id = %s",
            (seconds, batch_id),
        )


def _status(engine: Engine, batch_id: str) -> str:
    with engine.db.transaction() as cur:
        cur.execute("SELECT status FROM batches WHERE id = %s", (batch_id,))
        return str(cur.fetchone()["status"])


def test_a_scheduled_batch_holds_no_slot_and_a_lost_wake_up_is_made_good_by_the_sweep(engine: Engine) -> None:
    queue = engine.tasks
    assert isinstance(queue, ListQueue)
    _, batch_id = _submit(engine, 90)
    # Not dispatched at submit, its wake-up not armed yet (90 s is past the longest countdown).
    assert queue.dispatches == [] and queue.starts == []
    assert engine.dispatch(batch_id) == 0 and queue.places == []  # its gate is closed
    reconcile(engine)
    assert _status(engine, batch_id) == "scheduled" and queue.places == [] and queue.starts == []
    _start_in(engine, batch_id, 0.5)
    reconcile(engine)  # start_at comes before the next sweep: a wake-up at it is armed
    assert [b for b, _ in queue.starts] == [batch_id] and 0 < queue.starts[0][1] <= 0.5
    assert _status(engine, batch_id) == "scheduled"
    _start_in(engine, batch_id, -1)  # the wake-up was lost (a worker restarted)
    sweep = reconcile(engine)
    assert sweep.started == 1 and _status(engine, batch_id) == "queued"
    assert batch_id in queue.dispatches
    engine.dispatch(batch_id)  # the dispatch task (the sweep may have granted the slots already)
    assert len(queue.places) == 2  # its concurrency, no more
    for call_id in queue.places:
        engine.place_call(call_id, batch_id=batch_id)
    assert _status(engine, batch_id) == "running"
    assert engine.start(batch_id) is True and _status(engine, batch_id) == "running"  # repeated: no change
    assert reconcile(engine).started == 0


def test_a_near_start_at_arms_one_wake_up_at_submit_and_an_early_one_changes_nothing(engine: Engine) -> None:
    queue = engine.tasks
    assert isinstance(queue, ListQueue)
    _, batch_id = _submit(engine, 20)  # within the longest countdown (60 s)
    assert [b for b, _ in queue.starts] == [batch_id] and 19 < queue.starts[0][1] <= 20
    assert engine.start(batch_id) is False and _status(engine, batch_id) == "scheduled"
    engine.gates.forget(batch_id)  # Redis lost the batch: it is rebuilt with its gate closed
    assert reconcile(engine).rebuilt == 1
    assert engine.dispatch(batch_id) == 0 and queue.places == []
    _start_in(engine, batch_id, -0.1)
    assert engine.start(batch_id) is True and _status(engine, batch_id) == "queued"
    assert engine.dispatch(batch_id) == 2


def test_pause_resume_and_a_start_at_passing_while_paused(engine: Engine) -> None:
    queue = engine.tasks
    assert isinstance(queue, ListQueue)
    tenant_id, batch_id = _submit(engine, 90)
    assert engine.command(tenant_id, batch_id, Command.PAUSE)["status"] == "paused"
    assert engine.command(tenant_id, batch_id, Command.RESUME)["status"] == "scheduled"  # start_at ahead
    assert engine.dispatch(batch_id) == 0 and queue.places == []
    assert engine.command(tenant_id, batch_id, Command.PAUSE)["status"] == "paused"
    _start_in(engine, batch_id, -1)
    assert engine.start(batch_id) is False and _status(engine, batch_id) == "paused"  # the wake-up
    assert reconcile(engine).started == 0 and _status(engine, batch_id) == "paused" and queue.places == []
    assert engine.command(tenant_id, batch_id, Command.RESUME)["status"] == "queued"  # start_at passed
    engine.dispatch(batch_id)
    assert len(queue.places) == 2
