"""A drain's events, applied one after another, leave their Redis work (delivery kicks, slots
freed) to one flush per batch, on real PostgreSQL and Redis: nothing moves in Redis before the
flush, and after it the batch is exactly where one event at a time would have left it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from batchcalls.adapters.store.tenants import create_key
from batchcalls.domain import voices
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import AttemptStatus, Outcome
from batchcalls.domain.validation import build_batch
from batchcalls.engine import Engine, Gathered
from tests.support.engine import ListQueue, engine_on
from tests.support.servers import TestServers

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(servers: TestServers) -> Iterator[Engine]:
    with engine_on(servers) as built:
        yield built


def _batch(engine: Engine, calls: int, concurrency: int) -> tuple[str, list[str], ListQueue]:
    """A batch with a callback URL, its first `concurrency` calls dialed: (id, live calls, queue)."""
    queue = engine.tasks
    assert isinstance(queue, ListQueue)
    tenant, _ = create_key(engine.db, "gathered-test")
    body = {
        "calls": [{"phone_number": f"+44207946{i:04d}", "script": {"text": "Hi"}} for i in range(calls)],
        "concurrency": concurrency,
        "callback_url": "https://crm.example/hooks",
    }
    batch_id, _ = engine.submit(
        tenant, build_batch(body, max_concurrency=10, voices=voices.voice_catalog()), None, body
    )
    engine.dispatch(batch_id)
    live = list(queue.places)
    for call_id in live:
        engine.place_call(call_id, batch_id=batch_id)
    queue.places.clear()
    queue.delivers.clear()
    engine.delivery_starting(batch_id)  # the deliver task `batch.started` was kicked for runs
    return batch_id, live, queue


def _ended(call_id: str) -> list[ProviderEvent]:
    at = time.time()
    return [
        ProviderEvent(call_id, 1, AttemptStatus.ANSWERED, at),
        ProviderEvent(call_id, 1, AttemptStatus.ENDED, at, Outcome.COMPLETED),
    ]


def test_calls_ending_in_one_read_free_their_slots_and_kick_delivery_once(engine: Engine) -> None:
    batch_id, live, queue = _batch(engine, calls=6, concurrency=3)
    work = Gathered()
    for call_id in live:
        assert engine.record_events(_ended(call_id), work) == ["live", "final"]
    assert engine.gates.depth(batch_id) == (3, 0, 3)  # nothing moved in Redis yet
    assert (queue.places, queue.delivers) == ([], [])
    engine.flush_events(work)
    ready, _, leased = engine.gates.depth(batch_id)
    assert (ready, leased) == (0, 3)
    assert len(queue.places) == 3 and not set(queue.places) & set(live)  # the next three calls
    assert len(queue.delivers) == 1  # one relay for the three calls' events
    assert work == Gathered()


def test_the_last_calls_of_a_batch_in_one_read_finish_it_and_clear_its_redis_state(engine: Engine) -> None:
    batch_id, live, queue = _batch(engine, calls=2, concurrency=2)
    work = Gathered()
    for call_id in live:
        engine.record_events(_ended(call_id), work)
    engine.flush_events(work)
    assert queue.delivers == [(batch_id, 0)]  # urgent: the batch's last events go at once
    assert queue.places == []
    left = engine.gates.redis.keys(f"bc:{{{batch_id}}}:*")
    assert [key for key in left if b":relay" not in key] == []  # only the relay's marks remain
    with engine.db.transaction() as cur:
        cur.execute("SELECT status, completed_calls FROM batches WHERE id = %s", (batch_id,))
        assert cur.fetchone() == {"status": "completed", "completed_calls": 2}
