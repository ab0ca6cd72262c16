"""Thin tasks: each takes ids, loads nothing itself, and calls one engine use case.

Every task is idempotent (acks_late redelivers it after a worker dies) and retries itself when
Postgres or Redis is briefly unreachable, instead of failing a call.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import redis
from celery import Task
from celery.signals import setup_logging, worker_init, worker_process_init, worker_process_shutdown
from kombu.exceptions import KombuError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from batchcalls.adapters import logs
from batchcalls.adapters.delivery.relay import Relay
from batchcalls.adapters.gates import Gates
from batchcalls.adapters.metrics import Metrics
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.telephony.factory import make_provider
from batchcalls.domain.errors import ConfigurationError
from batchcalls.domain.models import ProviderEvent
from batchcalls.engine import Engine, Gathered
from batchcalls.engine.reconciler import reconcile as reconcile_once
from workers.celery_app import create_celery
from workers.inbox import TRANSIENT
from workers.queue import CeleryTaskQueue

log = logging.getLogger("batchcalls.tasks")


app = create_celery()


@setup_logging.connect
def _configure_logging(**_: object) -> None:
    """Celery leaves logging to us when this signal has a receiver: one format everywhere."""
    logs.configure()


@worker_init.connect
def _check_provider(**_: object) -> None:
    """A worker whose provider cannot work (a missing Vonage setting, a bad key) refuses to start,
    rather than failing every call. Celery logs and swallows a handler's exception: exit instead."""
    try:
        make_provider(app.settings, CeleryTaskQueue(app))
    except ConfigurationError as exc:
        log.critical("cannot start the worker error=%s", logs.quoted(exc))
        raise SystemExit(f"cannot start the worker: {exc}") from exc


@worker_process_init.connect
def _warm_up(**_: object) -> None:
    """Each pool process builds its engine and opens its Postgres, Redis, broker and provider
    connections before its first task, which would otherwise pay for them (a provider without
    `warm` has nothing to open). In a thread: Celery kills a pool process whose init takes more
    than a few seconds, and a server may be slow to answer."""
    engine = _parts()[0]
    if isinstance(engine.tasks, CeleryTaskQueue):
        # Here, not in the thread: a task sent while the thread built the producer pool would
        # build a second one.
        engine.tasks.warm_up()
    threading.Thread(target=_open_connections, args=(engine,), name="warm-up", daemon=True).start()


def _open_connections(engine: Engine) -> None:
    try:
        with engine.db.transaction() as cur:
            cur.execute("SELECT 1")
        engine.gates.ping()
    except TRANSIENT as exc:  # the first task retries as usual
        log.warning("could not open connections before the first task error=%s", logs.quoted(exc))
    warm = getattr(engine.provider, "warm", None)
    if warm is not None:
        warm()
    try:
        if isinstance(engine.tasks, CeleryTaskQueue):
            engine.tasks.open_connections()
    except (*TRANSIENT, KombuError, OSError) as exc:  # a broker that is slow to answer waits 2 s here
        log.warning("could not open the broker connection before the first task error=%s", logs.quoted(exc))


@worker_process_shutdown.connect
def _flush_metrics(**_: object) -> None:
    """A pool process that stops writes the counts it has not written yet."""
    if _engine is not None and _engine[0] == os.getpid() and _engine[1].metrics is not None:
        _engine[1].metrics.flush()


_engine: tuple[int, Engine, Relay] | None = None


def _parts() -> tuple[Engine, Relay]:
    """One engine per worker process, built after fork."""
    global _engine
    if _engine is None or _engine[0] != os.getpid():
        settings = app.settings
        client = redis.Redis.from_url(settings.redis_url)
        queue = CeleryTaskQueue(app)
        db = Database(settings.database_url, prepare=settings.pg_prepared_statements)
        metrics = Metrics(client)
        engine = Engine(
            settings, db, Gates(client, settings.lease_seconds), queue, make_provider(settings, queue), metrics
        )
        _engine = (os.getpid(), engine, Relay(settings, db, client, metrics=metrics))
    return _engine[1], _engine[2]


class EngineTask(Task):  # type: ignore[misc]
    autoretry_for = TRANSIENT
    retry_backoff = 1
    retry_backoff_max = 30
    max_retries = None
    acks_late = True


@app.task(base=EngineTask, name="batchcalls.dispatch")
def dispatch(batch_id: str) -> int:
    return _parts()[0].dispatch(batch_id)


@app.task(base=EngineTask, name="batchcalls.wake")
def wake(batch_id: str) -> int:
    """A retry came due (an idempotent wake-up)."""
    return _parts()[0].dispatch(batch_id)


@app.task(base=EngineTask, name="batchcalls.pace")
def pace() -> int:
    """Take the account's calls-per-second turns: one such task at a time in the fleet."""
    return _parts()[0].pace()


@app.task(base=EngineTask, name="batchcalls.place_call")
def place_call(
    batch_id: str,
    call_id: str,
    reserved_at: float | None = None,
    granted_at: float | None = None,
    *,
    freed: bool = False,
) -> None:
    """`batch_id` shows in Flower which batch a call belongs to, and spares reading the call."""
    _parts()[0].place_call(call_id, reserved_at, granted_at, batch_id=batch_id, freed=freed)


@app.task(base=EngineTask, name="batchcalls.place_calls")
def place_calls(batch_id: str, call_ids: list[str], granted_at: float | None = None, *, freed: bool = False) -> None:
    """Several calls of a batch granted slots together, placed one after another."""
    _parts()[0].place_calls(batch_id, call_ids, granted_at, freed=freed)


@app.task(base=EngineTask, name="batchcalls.record_event")
def record_event(event: dict[str, Any]) -> dict[str, Any]:
    """One provider event; the result names the call dialed in the slot it freed (Flower shows it)."""
    applied, placed = _parts()[0].record_events_placing([ProviderEvent.from_message(event)])
    return {"applied": applied[0], "placed": placed}


@app.task(base=EngineTask, name="batchcalls.record_events")
def record_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Several events (of one call, due together), applied in order; each exactly once."""
    applied, placed = _parts()[0].record_events_placing([ProviderEvent.from_message(event) for event in events])
    return {"applied": applied, "placed": placed}


@app.task(base=EngineTask, name="batchcalls.drain_events")
def drain_events(shard: int) -> dict[str, Any]:
    """Provider events of one inbox shard, many per task (workers/inbox.py)."""
    engine = _parts()[0]
    assert isinstance(engine.tasks, CeleryTaskQueue)
    # A freed slot's next call goes out as a `place_call` task, not dialed here: a shard's
    # events are applied one after another, and a provider's create (on Vonage an HTTPS
    # request, up to its timeout) would hold up every event behind it.
    # The Redis work of a read's events (delivery kicks, slots renewed and freed) is done once
    # per batch after them: one round trip for many calls of a batch, not one for each.
    work = Gathered()
    done = engine.tasks.inbox.drain(
        shard, lambda events: engine.record_events(events, work), lambda: _flush(engine, work, shard)
    )
    return done.__dict__


# A drain's Redis work is retried in the drain for about three seconds (0.05 s, doubling, six
# times): given up, it is lost for every call of the read (their events, applied, are not
# applied again), and their slots come back only when their leases run out.
FLUSH_RETRIES = 6
_FLUSH_RETRY = Retry(ExponentialBackoff(cap=1.6, base=0.025), FLUSH_RETRIES, supported_errors=(*TRANSIENT, KombuError))


def _flush(engine: Engine, work: Gathered, shard: int) -> None:
    def retrying(exc: Exception) -> None:
        log.warning("retrying the Redis work of applied provider events shard=%d error=%s", shard, logs.quoted(exc))

    try:
        _FLUSH_RETRY.call_with_retry(lambda: engine.flush_events(work), retrying)
    except (*TRANSIENT, KombuError):
        raise  # still failing: the task retries
    except Exception:
        # As `_apply` treats an event that fails for good: logged, and the drain goes on
        # (raised, it would hold the shard's flag, and its events, for half a minute).
        log.exception("dropping the Redis work of applied provider events shard=%d", shard)
        work.clear()


@app.task(base=EngineTask, name="batchcalls.record_responses")
def record_responses(call_id: str, attempt: int, responses: list[dict[str, Any]]) -> int:
    """Input results queued by an API of an earlier release; the API now stores them itself."""
    return _parts()[0].record_responses(call_id, attempt, responses)


@app.task(base=EngineTask, name="batchcalls.record_input")
def record_input(call_id: str, attempt: int, step: int, responses: list[dict[str, Any]]) -> bool:
    """The simulator's callee answered an input step: stored; an opt-out suppresses the number."""
    return _parts()[0].record_input(call_id, attempt, step, responses)


@app.task(base=EngineTask, name="batchcalls.hang_up")
def hang_up(batch_id: str, call_id: str, tries: int = 0) -> bool:
    """A live call of a cancelled batch (`hangup_live_calls`): ended as cancelled, hung up."""
    return _parts()[0].hang_up(batch_id, call_id, tries)


@app.task(base=EngineTask, name="batchcalls.leave_voicemail")
def leave_voicemail(call_id: str, attempt: int, provider_call_id: str) -> bool:
    """A machine beeped on a call with a voicemail message (Vonage): the message is spoken."""
    return _parts()[0].leave_voicemail(call_id, attempt, provider_call_id)


@app.task(base=EngineTask, name="batchcalls.expire")
def expire(batch_id: str) -> int:
    """The batch's `expires_at` came (an idempotent wake-up): its waiting calls end expired."""
    return _parts()[0].expire(batch_id)


@app.task(base=EngineTask, name="batchcalls.start")
def start(batch_id: str) -> bool:
    """The batch's `start_at` came (an idempotent wake-up): a scheduled batch starts dialing."""
    return _parts()[0].start(batch_id)


@app.task(base=EngineTask, name="batchcalls.deliver")
def deliver(batch_id: str) -> int:
    engine, relay = _parts()
    return engine.deliver(relay, batch_id)


@app.task(base=EngineTask, name="batchcalls.reconcile")
def reconcile() -> dict[str, int]:
    sweep = reconcile_once(_parts()[0])
    return sweep.__dict__
