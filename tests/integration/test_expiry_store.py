"""Expiry in PostgreSQL with an engine in this process: once a batch's `expires_at` has passed,
the statement that records an attempt refuses its calls, a retry is never scheduled past it,
and the reconciler's sweep ends the waiting calls `expired` (the batch's wake-up lost)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from batchcalls.adapters.store import calls
from batchcalls.adapters.store.tenants import create_key
from batchcalls.domain import voices
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import AttemptStatus, Outcome
from batchcalls.domain.validation import build_batch
from batchcalls.engine import Engine
from batchcalls.engine.reconciler import reconcile
from tests.support.engine import ListQueue, engine_on
from tests.support.servers import TestServers

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(servers: TestServers) -> Iterator[Engine]:
    with engine_on(servers) as built:
        yield built


def _batch(engine: Engine, retry: dict[str, object] | None = None) -> tuple[str, list[str]]:
    """A batch of 5 calls at concurrency 2 expiring in an hour, its first two calls dialed."""
    tenant, _ = create_key(engine.db, "expiry-test")
    body: dict[str, object] = {
        "calls": [{"phone_number": f"+44207946{i:04d}", "script": {"text": "Hi"}} for i in range(5)],
        "concurrency": 2,
        "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    if retry:
        body["retry_config"] = retry
    batch = build_batch(body, max_concurrency=10, voices=voices.voice_catalog(), now=datetime.now(UTC))
    batch_id, _ = engine.submit(tenant, batch, None, body)
    engine.dispatch(batch_id)
    queue = engine.tasks
    assert isinstance(queue, ListQueue)
    live = list(queue.places)
    for call_id in live:
        engine.place_call(call_id, batch_id=batch_id)
    queue.places.clear()
    return batch_id, live


def _expires_in(engine: Engine, batch_id: str, seconds: float) -> None:
    with engine.db.transaction() as cur:
        cur.execute(
            "UPDATE batches SET expires_at = clock_timestamp() + make_interval(secs => %s) WHERE id = %s",
            (seconds, batch_id),
        )


def _calls(engine: Engine, batch_id: str) -> dict[str, dict[str, object]]:
    with engine.db.transaction() as cur:
        cur.execute("SELECT id, status, outcome, attempt_count FROM calls WHERE batch_id = %s", (batch_id,))
        return {row["id"]: dict(row) for row in cur.fetchall()}


def test_an_expired_batch_refuses_attempts_and_the_sweep_ends_its_waiting_calls(engine: Engine) -> None:
    batch_id, live = _batch(engine)
    _expires_in(engine, batch_id, -1)
    waiting = [c for c in _calls(engine, batch_id) if c not in live]
    assert calls.record_attempt(engine.db, waiting[0], "simulator") == (None, None)
    reconcile(engine)
    after = _calls(engine, batch_id)
    assert {(after[c]["status"], after[c]["outcome"]) for c in waiting} == {("failed", "expired")}
    assert {after[c]["status"] for c in live} == {"dialing"}
    for call_id in live:
        at = time.time()
        engine.record_events(
            [
                ProviderEvent(call_id, 1, AttemptStatus.ANSWERED, at),
                ProviderEvent(call_id, 1, AttemptStatus.ENDED, at, Outcome.COMPLETED),
            ]
        )
    with engine.db.transaction() as cur:
        cur.execute("SELECT * FROM batches WHERE id = %s", (batch_id,))
        batch = cur.fetchone()
        cur.execute("SELECT type FROM events WHERE batch_id = %s ORDER BY seq", (batch_id,))
        types = [r["type"] for r in cur.fetchall()]
    assert batch["status"] == "completed" and batch["finished_at"] is not None
    assert (batch["completed_calls"], batch["failed_calls"]) == (2, 3)
    assert types.count("batch.completed") == 1


def test_no_retry_is_scheduled_past_the_expiry(engine: Engine) -> None:
    batch_id, live = _batch(engine, {"max_attempts": 3, "delay": 60})
    _expires_in(engine, batch_id, 30)  # a retry would come due after it
    engine.record_events([ProviderEvent(live[0], 1, AttemptStatus.ENDED, time.time(), Outcome.BUSY)])
    assert _calls(engine, batch_id)[live[0]]["outcome"] == "expired"
    _expires_in(engine, batch_id, 600)  # a retry comes due before it
    engine.record_events([ProviderEvent(live[1], 1, AttemptStatus.ENDED, time.time(), Outcome.BUSY)])
    assert _calls(engine, batch_id)[live[1]]["status"] == "scheduled"


def test_a_call_granted_a_slot_after_the_expiry_ends_the_batchs_waiting_calls_at_once(engine: Engine) -> None:
    # The wake-up at `expires_at` has not run yet: the call given the freed slot is refused,
    # and the batch's waiting calls end then, rather than the call going back in line.
    batch_id, live = _batch(engine)
    _expires_in(engine, batch_id, -1)
    at = time.time()
    engine.record_events(
        [
            ProviderEvent(live[0], 1, AttemptStatus.ANSWERED, at),
            ProviderEvent(live[0], 1, AttemptStatus.ENDED, at, Outcome.COMPLETED),
        ]
    )
    queue = engine.tasks
    assert isinstance(queue, ListQueue)
    (granted,) = queue.places
    engine.place_call(granted, batch_id=batch_id)
    after = _calls(engine, batch_id)
    waiting = [c for c in after if c not in live]
    assert {(after[c]["status"], after[c]["outcome"], after[c]["attempt_count"]) for c in waiting} == {
        ("failed", "expired", 0)
    }
    assert engine.gates.depth(batch_id)[:2] == (0, 0)
