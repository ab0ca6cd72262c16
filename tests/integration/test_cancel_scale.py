"""Cancelling a batch of 100,000 waiting calls on real PostgreSQL and Redis, with an engine in
this process: one statement ends them all, no task is sent per call, one terminal event is
written. The time is printed as a figure, not asserted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from batchcalls.adapters.store import control
from batchcalls.adapters.store.tenants import create_key
from batchcalls.domain.commands import Command
from batchcalls.domain.models import NewBatch, NewCall
from batchcalls.engine import Engine
from tests.support.engine import ListQueue, engine_on
from tests.support.servers import TestServers

pytestmark = pytest.mark.integration

CALLS = 100_000


@pytest.fixture
def engine(servers: TestServers) -> Iterator[Engine]:
    with engine_on(servers) as built:
        yield built


def test_cancelling_100000_waiting_calls_is_one_statement_and_no_task_per_call(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, _ = create_key(engine.db, "cancel-scale")
    script = {"type": "text", "steps": [{"type": "text", "text": "Hi"}]}
    calls = tuple(NewCall(f"+4420794{i:05d}", script, None, 5) for i in range(CALLS))
    batch_id, _ = engine.submit(tenant, NewBatch(calls, concurrency=10), None, {"n": CALLS})
    queue = engine.tasks
    assert isinstance(queue, ListQueue)
    sent_before = (len(queue.places), len(queue.dispatches), len(queue.hang_ups))

    statements: list[str] = []
    real_execute = control.execute

    def counting(cur: Any, sql: str, params: Any = ()) -> None:
        statements.append(sql)
        real_execute(cur, sql, params)

    monkeypatch.setattr(control, "execute", counting)
    started = time.perf_counter()
    batch = engine.command(tenant.id, batch_id, Command.CANCEL)
    took = time.perf_counter() - started
    print(f"\ncancelled {CALLS:,} waiting calls in {took:.3f} s ({len(statements)} statements of the command)")

    assert batch["status"] == "cancelled" and batch["cancelled_calls"] == CALLS
    assert batch["finished_at"] is not None  # no live call: the batch ends with the command
    assert [s for s in statements if s.startswith("WITH e AS (UPDATE calls")] != []
    assert sum("UPDATE calls" in s for s in statements) == 1
    assert (len(queue.places), len(queue.dispatches), len(queue.hang_ups)) == sent_before
    assert not engine.gates.exists(batch_id)  # its 100,000 queued ids are gone from Redis
    with engine.db.transaction() as cur:
        cur.execute("SELECT type FROM events WHERE batch_id = %s ORDER BY seq", (batch_id,))
        types = [row["type"] for row in cur.fetchall()]
        cur.execute("SELECT count(*) AS n FROM calls WHERE batch_id = %s AND status = 'cancelled'", (batch_id,))
        assert cur.fetchone()["n"] == CALLS
    assert types == ["batch.cancelled"]
