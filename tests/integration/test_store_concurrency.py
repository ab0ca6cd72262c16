"""The Postgres statements the invariants rest on, run at once from several processes: an
attempt is started by exactly one of them, and a call's final event counts exactly once, with
exactly one terminal event per batch, however many processes apply it together. An attempt taken
back after a 429 and that attempt's provider event never both take effect; a reconciler's
give-up and a late end of the same attempt end the call once. A batch submitted with one
Idempotency-Key is stored once, whole, and parallel submits never exceed the queued-calls limit."""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis

from batchcalls.adapters.gates import Gates
from batchcalls.adapters.store import calls
from batchcalls.adapters.store.batches import insert_batch
from batchcalls.adapters.store.db import Database, close_pools
from batchcalls.adapters.store.migrate import upgrade
from batchcalls.adapters.store.tenants import create_key
from batchcalls.domain.errors import OverCapacity
from batchcalls.domain.models import NewBatch, NewCall, ProviderEvent
from batchcalls.domain.retry import RetryPolicy
from batchcalls.domain.states import AttemptStatus, Outcome
from batchcalls.engine import Engine
from batchcalls.engine.reconciler import _resolve_stale
from config.settings import Settings
from tests.support.servers import TestServers, more_test_servers

pytestmark = pytest.mark.integration

PROCESSES = 6


def _batch(size: int, retry: RetryPolicy | None = None) -> NewBatch:
    return NewBatch(
        calls=tuple(
            NewCall(f"+4420794600{i:02d}", {"type": None, "steps": [{"type": "text", "text": "Hi"}]}, None, 5)
            for i in range(size)
        ),
        concurrency=size,
        retry=retry or RetryPolicy(),
    )


def _run(target: Callable[..., None], args: Sequence[tuple[Any, ...]], timeout: float = 120) -> list[tuple[Any, ...]]:
    """Run `target(*a, barrier, results)` in one spawned process per `a`; each puts one answer,
    ("ok", ...) or ("error", traceback). Returns the answers in the order of `args`."""
    close_pools()  # no connection of this process is inherited or shared
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(args), timeout=30), ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(index, *a, barrier, results), daemon=True) for index, a in enumerate(args)
    ]
    for proc in procs:
        proc.start()
    try:
        answers = dict(results.get(timeout=timeout) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    ordered = [answers[index] for index in range(len(args))]
    errors = [a[1] for a in ordered if a[0] != "ok"]
    assert not errors, "\n".join(errors)
    return ordered


def _start(dsn: str, call_id: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    db = Database(dsn)
    started, _ = calls.record_attempt(db, call_id, "simulator")
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
def own(servers: TestServers) -> Iterator[TestServers]:
    # A database of its own: the session's running stack (its beat's reconciler) would otherwise
    # find these batches waiting and dial their calls itself. (And a Redis database of its own
    # for the engine the reconciler test runs.)
    with more_test_servers(servers) as found:
        upgrade(found.database_url)
        yield found


@pytest.fixture(scope="module")
def dsn(own: TestServers) -> str:
    return own.database_url


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
    call_ids = [cid for cid, *_ in submitted.calls]
    for call_id in call_ids:
        started, _ = calls.record_attempt(db, call_id, "simulator")
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


def _undo_or_apply(index: int, dsn: str, role: str, events: list[ProviderEvent], barrier: Any, results: Any) -> None:
    """For each call in turn, together with the others: take back its attempt as a throttled
    create does (`undo`), or apply the provider's event for that attempt (`event`)."""
    try:
        db = Database(dsn)
        outcomes: list[bool | str] = []
        for event in events:
            barrier.wait()
            with db.transaction() as cur:
                if role == "undo":
                    outcomes.append(calls.undo_attempt(cur, event.call_id, event.attempt))
                else:
                    outcomes.append(calls.apply_event(cur, event).applied)
        results.put((index, ("ok", role, outcomes)))
    except BaseException:
        results.put((index, ("error", traceback.format_exc())))


def test_an_undone_attempt_and_its_provider_event_never_both_take_effect(dsn: str) -> None:
    """undo_attempt (the provider answered 429) raced by the provider's event for the same
    attempt, three processes each: every call ends either undone (queued, no attempt, dialable
    again) or with the event applied, never both, and the batch row counts each final call once."""
    db = Database(dsn)
    tenant, _ = create_key(db, "race-undo")
    size = 30
    retry = RetryPolicy(max_attempts=2, delay=60, retry_on=frozenset({Outcome.BUSY}))
    submitted = insert_batch(
        db, tenant.id, _batch(size, retry), idempotency_key=None, request_hash="u", max_queued_calls=10**9
    )
    call_ids = [cid for cid, *_ in submitted.calls]
    for call_id in call_ids:
        assert calls.record_attempt(db, call_id, "simulator")[0] is not None
    now = time.time()
    kinds = [
        (AttemptStatus.ENDED, Outcome.COMPLETED),
        (AttemptStatus.ENDED, Outcome.BUSY),
        (AttemptStatus.RINGING, None),
    ]
    events = [
        ProviderEvent(call_id, 1, kinds[i % 3][0], now, kinds[i % 3][1], "uuid-" + call_id)
        for i, call_id in enumerate(call_ids)
    ]
    roles = ["undo", "event"] * (PROCESSES // 2)
    answers = _run(_undo_or_apply, [(dsn, role, events) for role in roles])

    expected = {
        (AttemptStatus.ENDED, Outcome.COMPLETED): ("completed", "ended"),
        (AttemptStatus.ENDED, Outcome.BUSY): ("scheduled", "ended"),
        (AttemptStatus.RINGING, None): ("ringing", "ringing"),
    }
    with db.transaction() as cur:
        cur.execute(
            "SELECT c.id, c.status, c.attempt_count, a.status AS attempt_status FROM calls c"
            " LEFT JOIN attempts a ON a.call_id = c.id WHERE c.batch_id = %s",
            (submitted.batch_id,),
        )
        rows = {row["id"]: row for row in cur.fetchall()}
        cur.execute(
            "SELECT completed_calls, failed_calls, cancelled_calls FROM batches WHERE id = %s", (submitted.batch_id,)
        )
        batch = cur.fetchone()
        cur.execute(
            "SELECT payload->'data'->>'id' AS call_id, count(*) AS n FROM events"
            " WHERE batch_id = %s AND type = 'batch.call_completed' GROUP BY 1",
            (submitted.batch_id,),
        )
        completed_events = {row["call_id"]: row["n"] for row in cur.fetchall()}
    assert len(rows) == size  # one row per call: an undone call has no attempt left
    undone = applied = 0
    for i, event in enumerate(events):
        row = rows[event.call_id]
        undos = sum(1 for a in answers if a[1] == "undo" and a[2][i] is True)
        moves = sum(1 for a in answers if a[1] == "event" and a[2][i] != calls.Applied.IGNORED)
        if row["attempt_status"] is None:
            undone += 1
            assert (row["status"], row["attempt_count"]) == ("queued", 0), row
            assert (undos, moves) == (1, 0), f"{event.call_id}: undone {undos} times, event applied {moves} times"
        else:
            applied += 1
            assert (row["status"], row["attempt_status"]) == expected[(event.status, event.outcome)], row
            assert row["attempt_count"] == 1, row
            assert (undos, moves) == (0, 1), f"{event.call_id}: undone {undos} times, event applied {moves} times"
    completed = [cid for cid, row in rows.items() if row["status"] == "completed"]
    assert batch == {"completed_calls": len(completed), "failed_calls": 0, "cancelled_calls": 0}
    assert completed_events == {cid: 1 for cid in completed}
    print(f"{undone} calls undone, {applied} took their event")
    for call_id, row in rows.items():  # an undone call is dialed again, as attempt 1
        if row["attempt_status"] is None:
            again, _ = calls.record_attempt(db, call_id, "simulator")
            assert again is not None and again["attempt_count"] == 1


def _submit(
    index: int, dsn: str, tenant_id: int, rounds: list[tuple[str | None, int, int]], barrier: Any, results: Any
) -> None:
    """Each round, together with the others: submit a batch of `size` calls under
    Idempotency-Key `key` (None: no key) with the capacity limit `limit`."""
    try:
        db = Database(dsn)
        answers: list[tuple[str, str | None, bool]] = []
        for key, size, limit in rounds:
            barrier.wait()
            try:
                submitted = insert_batch(
                    db, tenant_id, _batch(size), idempotency_key=key, request_hash=f"body-{key}", max_queued_calls=limit
                )
            except OverCapacity:
                answers.append(("over", None, False))
            else:
                answers.append(("ok", submitted.batch_id, submitted.created))
                assert submitted.created == bool(submitted.calls)
                assert len(submitted.calls) in (0, size)
        results.put((index, ("ok", answers)))
    except BaseException:
        results.put((index, ("error", traceback.format_exc())))


def test_a_batch_submitted_with_one_key_by_many_processes_is_stored_once_whole(dsn: str) -> None:
    """Six processes POST the same batch with the same Idempotency-Key at once (a client's
    retries racing each other): one stores it with all its calls, the others get its id."""
    db = Database(dsn)
    tenant, _ = create_key(db, "race-idempotent")
    rounds = [(f"key-{n}", 40 + n, 10**9) for n in range(10)]
    answers = _run(_submit, [(dsn, tenant.id, rounds)] * PROCESSES)

    for n, (key, size, _) in enumerate(rounds):
        got = [answer[1][n] for answer in answers]
        assert all(status == "ok" for status, _, _ in got), got
        assert len({batch_id for _, batch_id, _ in got}) == 1, f"{key}: several batches {got}"
        assert sum(created for _, _, created in got) == 1, f"{key}: created {got}"
        with db.transaction() as cur:
            cur.execute(
                "SELECT b.id, b.total_calls, (SELECT count(*) FROM calls c WHERE c.batch_id = b.id) AS n"
                " FROM batches b WHERE b.tenant_id = %s AND b.idempotency_key = %s",
                (tenant.id, key),
            )
            stored = cur.fetchall()
        assert [(row["id"], row["total_calls"], row["n"]) for row in stored] == [(got[0][1], size, size)]
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM batches WHERE tenant_id = %s", (tenant.id,))
        assert cur.fetchone()["n"] == len(rounds)


def _open_calls(db: Database) -> int:
    with db.transaction() as cur:
        cur.execute(
            "SELECT coalesce(sum(total_calls - completed_calls - failed_calls - cancelled_calls), 0) AS n"
            " FROM batches WHERE status IN ('queued', 'running', 'paused')"
        )
        return int(cur.fetchone()["n"])


def test_parallel_submits_never_exceed_the_queued_calls_limit(dsn: str) -> None:
    """Six processes submit a batch each at once, every one of which fits under
    BATCHCALLS_MAX_QUEUED_CALLS alone but only three together: three are stored, three refused."""
    db = Database(dsn)
    tenant, _ = create_key(db, "race-capacity")
    size, fit, rounds = 50, 3, 6
    # The limit of round n leaves room for `fit` more batches on top of every earlier round's.
    base = _open_calls(db)
    plan = [(None, size, base + (n + 1) * fit * size) for n in range(rounds)]
    answers = _run(_submit, [(dsn, tenant.id, plan)] * PROCESSES)

    for n in range(rounds):
        got = [answer[1][n] for answer in answers]
        assert sorted(status for status, _, _ in got) == ["ok"] * fit + ["over"] * (PROCESSES - fit), got
    assert _open_calls(db) == base + rounds * fit * size
    with db.transaction() as cur:
        cur.execute(
            "SELECT count(*) AS batches, sum(total_calls) AS total, (SELECT count(*) FROM calls c"
            " JOIN batches b ON b.id = c.batch_id WHERE b.tenant_id = %(t)s) AS calls"
            " FROM batches WHERE tenant_id = %(t)s",
            {"t": tenant.id},
        )
        row = cur.fetchone()
    assert (row["batches"], row["total"], row["calls"]) == (rounds * fit, rounds * fit * size, rounds * fit * size)


class _Tasks:
    """The engine's task queue, reduced to a log of what it would have sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: self.sent.append(name)


class _ForgetfulProvider:
    """A provider that knows nothing of the stale attempts: the reconciler must give them up."""

    name = "simulator"

    def create_call(self, request: Any) -> str:
        raise AssertionError("nothing is dialed in this test")

    def poll(self, attempt: Any) -> None:
        return None

    def hangup(self, call_id: str, attempt: int, provider_call_id: str) -> None:
        pass


def _give_up_or_end(
    index: int, database_url: str, redis_url: str, role: str, call_ids: list[str], barrier: Any, results: Any
) -> None:
    """For each call in turn, together with the others: the reconciler gives its stale attempt
    up (`reconciler`, from the stale list it read first, as a sweep does), or the provider's
    late `ended` event for it arrives (`webhook`, through Engine.record_event as the task does)."""
    try:
        engine = Engine(
            Settings(database_url=database_url, redis_url=redis_url),
            Database(database_url),
            Gates(redis.Redis.from_url(redis_url), lease_seconds=60),
            _Tasks(),
            _ForgetfulProvider(),
        )
        with engine.db.transaction() as cur:
            stale = {row["call_id"]: row for row in calls.stale_attempts(cur, engine.settings.stale_attempt_seconds)}
        rng = random.Random(index)
        outcomes: list[str | int] = []
        for call_id in call_ids:
            barrier.wait()
            if role == "reconciler":
                outcomes.append(_resolve_stale(engine, stale[call_id]))
            else:
                time.sleep(rng.uniform(0, 0.0015))  # the reconciler asks the provider first: even the odds
                event = ProviderEvent(
                    call_id, 1, AttemptStatus.ENDED, time.time(), Outcome.COMPLETED, "uuid-" + call_id
                )
                outcomes.append(engine.record_event(event))
        results.put((index, ("ok", role, outcomes)))
    except BaseException:
        results.put((index, ("error", traceback.format_exc())))


def test_a_stale_attempt_given_up_while_its_late_end_arrives_ends_once(own: TestServers) -> None:
    """The reconciler's give-up of an attempt whose events stopped (the provider cannot account
    for it), raced by that attempt's late `ended` event, three processes each: every call ends
    once, either failed by the give-up or completed by the event, with one event of its end, the
    batch counts each call once and ends with one terminal event."""
    db = Database(own.database_url)
    tenant, _ = create_key(db, "race-give-up")
    size = 20
    submitted = insert_batch(
        db, tenant.id, _batch(size), idempotency_key=None, request_hash="g", max_queued_calls=10**9
    )
    call_ids = [cid for cid, *_ in submitted.calls]
    for n, call_id in enumerate(call_ids):
        assert calls.record_attempt(db, call_id, "simulator")[0] is not None
        with db.transaction() as cur:
            if n % 2:  # half were confirmed and rang; the others never heard of again
                calls.apply_event(
                    cur,
                    ProviderEvent(call_id, 1, AttemptStatus.RINGING, time.time(), provider_call_id="uuid-" + call_id),
                )
    with db.transaction() as cur:  # and none has heard anything for an hour
        cur.execute(
            "UPDATE attempts SET last_event_at = clock_timestamp() - interval '1 hour' WHERE call_id = ANY(%s)",
            (call_ids,),
        )
    roles = ["reconciler", "webhook"] * (PROCESSES // 2)
    answers = _run(_give_up_or_end, [(own.database_url, own.redis_url, role, call_ids) for role in roles])

    with db.transaction() as cur:
        cur.execute(
            "SELECT c.id, c.status, c.outcome, c.last_error, count(a.*) AS attempts,"
            " bool_and(a.status = 'ended') AS ended FROM calls c JOIN attempts a ON a.call_id = c.id"
            " WHERE c.batch_id = %s GROUP BY c.id",
            (submitted.batch_id,),
        )
        rows = {row["id"]: row for row in cur.fetchall()}
        cur.execute("SELECT * FROM batches WHERE id = %s", (submitted.batch_id,))
        batch = cur.fetchone()
        cur.execute(
            "SELECT type, payload->'data'->>'id' AS call_id FROM events WHERE batch_id = %s", (submitted.batch_id,)
        )
        events = [(row["type"], row["call_id"]) for row in cur.fetchall()]
    completed = {cid for cid, row in rows.items() if row["status"] == "completed"}
    failed = {cid for cid, row in rows.items() if row["status"] == "failed"}
    assert len(rows) == size and completed | failed == set(call_ids), rows
    for i, call_id in enumerate(call_ids):
        row = rows[call_id]
        assert row["attempts"] == 1 and row["ended"], row  # given up, never dialed again
        finals = sum(1 for a in answers if a[1] == "webhook" and a[2][i] == calls.Applied.FINAL)
        if call_id in completed:
            assert row["outcome"] == "completed" and finals == 1, (row, finals)
        else:
            assert row["outcome"] == "failed" and finals == 0, (row, finals)
            assert "provider" in (row["last_error"] or ""), row  # the give-up's reason
    assert (batch["completed_calls"], batch["failed_calls"], batch["cancelled_calls"]) == (
        len(completed),
        len(failed),
        0,
    )
    assert batch["status"] == ("completed" if completed else "failed") and batch["finished_at"] is not None
    call_events = sorted(cid for kind, cid in events if kind in ("batch.call_completed", "batch.call_failed"))
    assert call_events == sorted(call_ids)  # one event of its end per call
    assert sorted(cid for kind, cid in events if kind == "batch.call_completed") == sorted(completed)
    terminal = [kind for kind, _ in events if kind in ("batch.completed", "batch.failed")]
    assert terminal == ["batch.completed" if completed else "batch.failed"]
    assert [kind for kind, _ in events].count("batch.started") == 1
    print(f"{len(failed)} calls given up, {len(completed)} ended by their late event")
