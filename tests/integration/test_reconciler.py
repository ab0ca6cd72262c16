"""The reconciler's lost-state check on real PostgreSQL and Redis, with an engine in this process:
a batch that moves while the sweep reads it, or whose state is still being written, is not taken
for lost (and rebuilt: every waiting call read into one worker), while a batch whose ready queue
Redis really lost, or whose writer died half-way, is."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from batchcalls.adapters import gates as gates_mod
from batchcalls.adapters.gates import ready_score
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


def _running_batch(engine: Engine) -> tuple[str, list[str]]:
    """A batch of 10 calls at concurrency 2, its first two calls dialed: (batch id, live calls)."""
    tenant, _ = create_key(engine.db, "reconciler-test")
    body = {
        "calls": [{"phone_number": f"+44207946{i:04d}", "script": {"text": "Hi"}} for i in range(10)],
        "concurrency": 2,
    }
    batch_id, _ = engine.submit(
        tenant, build_batch(body, max_concurrency=10, voices=voices.voice_catalog()), None, body
    )
    engine.dispatch(batch_id)
    queue = engine.tasks
    assert isinstance(queue, ListQueue)
    live = list(queue.places)
    for call_id in live:
        engine.place_call(call_id, batch_id=batch_id)
    queue.places.clear()
    return batch_id, live


def _end(engine: Engine, call_id: str) -> None:
    """The provider reports the call answered and done: its slot goes to the next call."""
    at = time.time()
    engine.record_events(
        [
            ProviderEvent(call_id, 1, AttemptStatus.ANSWERED, at),
            ProviderEvent(call_id, 1, AttemptStatus.ENDED, at, Outcome.COMPLETED),
        ]
    )


def test_calls_that_end_while_the_sweep_reads_the_batch_are_not_a_lost_state(engine: Engine) -> None:
    batch_id, live = _running_batch(engine)
    depth = engine.gates.depth

    def moving_depth(batch: str) -> tuple[int, int, int]:
        # One call ends just before the sweep reads Redis, and one just after: whichever of
        # Redis and Postgres the sweep reads first, a call moved on between the two reads.
        _end(engine, live[0])
        found = depth(batch)
        _end(engine, live[1])
        return found

    engine.gates.depth = moving_depth  # type: ignore[assignment]
    sweep = reconcile(engine)
    assert sweep.rebuilt == 0


def test_a_ready_queue_redis_lost_is_rebuilt_from_postgres(engine: Engine) -> None:
    batch_id, _ = _running_batch(engine)
    ready_key = f"bc:{{{batch_id}}}:ready"
    assert engine.gates.redis.zcard(ready_key) == 8
    engine.gates.redis.delete(ready_key)
    sweep = reconcile(engine)
    assert sweep.rebuilt == 1
    assert engine.gates.redis.zcard(ready_key) == 8


def _slow_ready(engine: Engine, batch_id: str, stop_after: int | None = None) -> Iterator[tuple[str, int]]:
    """The batch's waiting calls, as a submit writes them to Redis, a chunk at a time (slowly)."""
    for index, (call_id, score) in enumerate(_waiting(engine, batch_id)):
        if stop_after is not None and index == stop_after:
            raise RuntimeError("the process writing the batch died")
        yield call_id, score
        time.sleep(0.05)


def _waiting(engine: Engine, batch_id: str) -> list[tuple[str, int]]:
    with engine.db.transaction() as cur:
        cur.execute(
            "SELECT id, seq, priority FROM calls WHERE batch_id = %s AND status = 'queued' ORDER BY seq", (batch_id,)
        )
        return [(r["id"], ready_score(r["priority"], r["seq"])) for r in cur.fetchall()]


def test_a_batch_whose_state_is_being_written_is_not_taken_for_lost(engine: Engine) -> None:
    batch_id, live = _running_batch(engine)
    engine.gates.forget(batch_id)  # as a submit stands before its Redis state is written
    loader = threading.Thread(
        target=engine.gates.load_batch, args=(batch_id, 2, _slow_ready(engine, batch_id), (), live), kwargs={"chunk": 2}
    )
    loader.start()
    ready_key = f"bc:{{{batch_id}}}:ready"
    while engine.gates.redis.zcard(ready_key) < 2:  # the first chunk is written
        time.sleep(0.005)
    sweep = reconcile(engine)
    loader.join()
    assert sweep.rebuilt == 0
    assert engine.gates.exists(batch_id) and engine.gates.redis.zcard(ready_key) == 8


def test_a_batch_whose_writer_died_half_way_is_rebuilt_once_its_mark_runs_out(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gates_mod, "LOADING_MS", 400)
    batch_id, live = _running_batch(engine)
    engine.gates.forget(batch_id)
    with pytest.raises(RuntimeError):
        engine.gates.load_batch(batch_id, 2, _slow_ready(engine, batch_id, stop_after=5), (), live, chunk=2)
    assert reconcile(engine).rebuilt == 0  # still marked: it might be a writer that is slow
    deadline = time.time() + 30
    while engine.gates.loading(batch_id):  # the mark runs out
        assert time.time() < deadline, "the loading mark never ran out"
        time.sleep(0.05)
    assert reconcile(engine).rebuilt == 1
    assert engine.gates.exists(batch_id) and engine.gates.redis.zcard(f"bc:{{{batch_id}}}:ready") == 8
