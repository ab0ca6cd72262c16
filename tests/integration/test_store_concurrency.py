"""The Postgres statements the invariants rest on, run at once from several processes: an
attempt is started by exactly one of them, and a call's final event counts exactly once, with
exactly one terminal event per batch, however many processes apply it together."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from batchcalls.models import NewBatch, NewCall, ProviderEvent
from batchcalls.states import AttemptStatus, Outcome
from batchcalls.store import calls
from batchcalls.store.batches import insert_batch
from batchcalls.store.db import Database, close_pools
from batchcalls.store.migrate import upgrade
from batchcalls.store.tenants import create_key
from tests.support.servers import TestServers, more_test_servers

pytestmark = pytest.mark.integration

PROCESSES = 6


def _batch(size: int) -> NewBatch:
    return NewBatch(calls=tuple(NewCall(f"+4420794600{i:02d}", {"type": None, "steps": [{"type": "text", "text": "Hi"}]},
                                        None, 5) for i in range(size)), concurrency=size)


def _start(dsn: str, call_id: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    db = Database(dsn)
    with db.transaction() as cur:
        started, _ = calls.start_attempt(cur, call_id, "simulator")
    results.put(started is not None)


def _finish_all(dsn: str, call_ids: list[str], barrier: Any, seed: int) -> None:
    rng = random.Random(seed)
    order = call_ids[:]
    rng.shuffle(order)
    barrier.wait()
    db = Database(dsn)
    for call_id in order:
        event = ProviderEvent(call_id, 1, AttemptStatus.ENDED, time.time(), Outcome.COMPLETED, "uuid-" + call_id)
        with db.transaction() as cur:
            calls.apply_event(cur, event)


@pytest.fixture(scope="module")
def dsn(servers: TestServers) -> Iterator[str]:
    # A database of its own: the session's running stack (its beat's reconciler) would otherwise
    # find these batches waiting and dial their calls itself.
    with more_test_servers(servers) as own:
        upgrade(own.database_url)
        yield own.database_url


def test_an_attempt_is_started_by_exactly_one_of_many_processes(dsn: str) -> None:
    db = Database(dsn)
    tenant, _ = create_key(db, "race-start")
    submitted = insert_batch(db, tenant.id, _batch(1), idempotency_key=None, request_hash="x", max_queued_calls=10**9)
    call_id = submitted.calls[0][0]
    close_pools()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_start, args=(dsn, call_id, barrier, results)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    outcomes = [results.get(timeout=5) for _ in procs]
    assert outcomes.count(True) == 1
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM attempts WHERE call_id = %s", (call_id,))
        assert cur.fetchone()["n"] == 1


def test_final_events_applied_by_many_processes_count_once(dsn: str) -> None:
    db = Database(dsn)
    tenant, _ = create_key(db, "race-finish")
    submitted = insert_batch(db, tenant.id, _batch(20), idempotency_key=None, request_hash="y", max_queued_calls=10**9)
    call_ids = [cid for cid, _, _ in submitted.calls]
    for call_id in call_ids:
        with db.transaction() as cur:
            started, _ = calls.start_attempt(cur, call_id, "simulator")
            assert started is not None
    close_pools()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=_finish_all, args=(dsn, call_ids, barrier, seed)) for seed in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert all(proc.exitcode == 0 for proc in procs)
    with db.transaction() as cur:
        cur.execute("SELECT status, completed_calls, failed_calls FROM batches WHERE id = %s", (submitted.batch_id,))
        batch = cur.fetchone()
        cur.execute("SELECT type, count(*) AS n FROM events WHERE batch_id = %s GROUP BY type", (submitted.batch_id,))
        events = {row["type"]: row["n"] for row in cur.fetchall()}
    assert batch["status"] == "completed" and batch["completed_calls"] == 20 and batch["failed_calls"] == 0
    assert events == {"batch.started": 1, "batch.call_completed": 20, "batch.completed": 1}
