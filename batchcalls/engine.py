"""The engine's use cases: submit a batch, dispatch its calls into free slots, place one call,
and apply a provider event. Postgres decides every state; Redis gates who may dial when.

Tasks call these and nothing else; the engine never imports Celery. It reaches the task queue
through the small `TaskQueue` interface below.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from redis.exceptions import LockError, RedisError

from batchcalls import gates as gates_mod
from batchcalls import redis_keys
from batchcalls.delivery import Kicks, Relay
from batchcalls.errors import ProviderError, Unavailable
from batchcalls.gates import Gates
from batchcalls.logs import quoted
from batchcalls.metrics import Metrics
from batchcalls.models import NewBatch, ProviderEvent
from batchcalls.states import (
    ACTIVE_BATCH_STATUSES,
    LIVE_STATUSES,
    PENDING_STATUSES,
    AttemptStatus,
    BatchStatus,
    CallStatus,
    Outcome,
)
from batchcalls.store import batches, calls
from batchcalls.store.calls import Applied
from batchcalls.store.db import Database
from batchcalls.store.tenants import Tenant
from batchcalls.telephony.base import DialRequest, Provider
from config.settings import Settings

log = logging.getLogger("batchcalls.engine")

# A call that reserved a creation instant dials within this much of it, or reserves again; the
# rate window is widened by the same amount, so no window of one second holds more than the limit.
CPS_TOLERANCE = 0.03
# Waits for a creation instant up to this long are slept in the task; longer ones use a countdown.
MAX_IN_TASK_WAIT = 1.5
# A call placed by the task that freed its slot waits at most this long there for its creation
# instant; a longer wait goes to a `place_call` task of its own.
PLACE_HERE_MAX_WAIT = 0.05
# Provider events are applied at the message priority of a call of the default priority (5, of
# 0..9, 0 first). An event task places the next call itself only when that call has the same
# priority: a call of a higher priority goes out as a `place_call` task that jumps the queue, one
# of a lower priority as one that waits behind it. Placed at any other priority, a batch's calls
# would chain from event to event outside their priority: a chain above the default level ran
# for as long as its batches did, and starved the dispatch of new batches and the reconciler.
EVENT_PRIORITY = 5
# A grant of many slots at once is sent as `place_calls` tasks of up to PLACE_CHUNK_MAX calls,
# and at least PLACE_SPREAD tasks (a grant of fewer than 2 * PLACE_SPREAD calls: one per call).
# Events are delivered within about this long of their change, many calls' to one relay run.
DELIVERY_GATHER_SECONDS = 0.2
PLACE_CHUNK_MAX = 20
PLACE_SPREAD = 8
# What a batch refused for want of Redis tells its client to wait before trying again (seconds).
SUBMIT_RETRY_AFTER = 5


@dataclass
class Gathered:
    """The Redis work applied provider events leave, by batch, until `Engine.flush_events`."""

    kick: dict[str, bool] = field(default_factory=dict)  # batch -> urgent (its last events)
    renew: dict[str, list[str]] = field(default_factory=dict)
    release: dict[str, list[str]] = field(default_factory=dict)
    delay: dict[str, list[tuple[str, int, float]]] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)

    def clear(self) -> None:
        self.kick, self.renew, self.release, self.delay, self.finished = {}, {}, {}, {}, set()


class TaskQueue(Protocol):
    def dispatch(self, batch_id: str, priority: int) -> None: ...
    def place_call(
        self,
        batch_id: str,
        call_id: str,
        priority: int,
        countdown: float = 0,
        reserved_at: float | None = None,
        granted_at: float | None = None,
        freed: bool = False,
    ) -> None: ...
    def place_calls(
        self, batch_id: str, call_ids: list[str], priority: int, granted_at: float | None = None, freed: bool = False
    ) -> None: ...
    def wake(self, batch_id: str, countdown: float) -> None: ...
    def deliver(self, batch_id: str, countdown: float = 0) -> None: ...
    def record_event(self, event: ProviderEvent, countdown: float = 0) -> None: ...
    def record_events(self, events: list[ProviderEvent], countdown: float = 0) -> None: ...
    def recover_events(self) -> int: ...


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Engine:
    settings: Settings
    db: Database
    gates: Gates
    tasks: TaskQueue
    provider: Provider | None = None
    metrics: Metrics | None = None

    # -- submit -------------------------------------------------------------------------------

    def submit(self, tenant: Tenant, batch: NewBatch, idempotency_key: str | None, body: Any) -> tuple[str, bool]:
        """Store the batch and its calls in one transaction, queue them in Redis, and wake the
        dispatcher. Returns (batch id, created).

        Raises `Unavailable`, with nothing stored, when Redis cannot be reached before the
        batch is stored. Once it is stored it stands: should Redis fail after that, the
        reconciler queues it (as it does a batch whose API process died there), so the batch is
        accepted all the same rather than refused, which a client would retry into a second batch."""
        try:
            self.gates.redis.ping()
        except RedisError as exc:
            log.warning("batch refused, Redis unavailable error=%s", quoted(exc))
            raise Unavailable(
                "the service cannot queue calls right now (Redis is unavailable); nothing was stored, retry later",
                SUBMIT_RETRY_AFTER,
            ) from exc
        submitted = batches.insert_batch(
            self.db,
            tenant.id,
            batch,
            idempotency_key=idempotency_key,
            request_hash=request_hash(body),
            max_queued_calls=self.settings.max_queued_calls,
            tenant_max_queued_calls=self.settings.tenant_max_queued_calls,
        )
        if submitted.created:
            try:
                self.gates.load_batch(
                    submitted.batch_id,
                    batch.concurrency,
                    ((cid, gates_mod.ready_score(prio, seq)) for cid, seq, prio in submitted.calls),
                )
                self.tasks.dispatch(submitted.batch_id, batch.priority)
            except Exception as exc:  # noqa: BLE001 - Redis or the broker; the batch is stored either way
                log.warning(
                    "batch stored but not queued, the reconciler will queue it batch_id=%s error=%s",
                    submitted.batch_id,
                    quoted(f"{type(exc).__name__}: {exc}"),
                )
        return submitted.batch_id, submitted.created

    # -- dispatch -----------------------------------------------------------------------------

    def dispatch(
        self,
        batch_id: str,
        release: list[str] | None = None,
        delay: list[tuple[str, int, float]] | None = None,
        place_here: bool = False,
    ) -> int:
        """Release ended calls' slots, park retries, and send one `place_call` per free slot.
        With `place_here` (a provider event freed the slot) the first granted call is placed in
        this task instead, after the rest are sent: the slot goes to its next call without a
        trip through the broker and the queue. Returns how many calls were given a slot."""
        return self._dispatch(batch_id, release, delay, place_here)[0]

    def _dispatch(
        self,
        batch_id: str,
        release: list[str] | None,
        delay: list[tuple[str, int, float]] | None,
        place_here: bool,
    ) -> tuple[int, str | None]:
        """`dispatch`, and the call it placed here (if any)."""
        grant = self.gates.acquire(batch_id, release or (), delay or ())
        if grant.missing:
            if not self.rebuild(batch_id):
                return 0, None
            grant = self.gates.acquire(batch_id)
            if grant.missing:
                return 0, None
        here = None
        if place_here and grant.granted and gates_mod.priority_of(grant.granted[0][1]) == EVENT_PRIORITY:
            here = grant.granted[0][0]
        freed = bool(release)  # these slots were freed by calls that ended, not a batch's start
        self._send_placements(batch_id, grant.granted[1:] if here else grant.granted, grant.now, freed)
        if grant.expired:
            self._check_expired(batch_id, grant.expired)
        if grant.next_due_in is not None:
            self._schedule_wake(batch_id, grant.next_due_in)
        if here is not None:
            self.place_call(here, granted_at=grant.now, batch_id=batch_id, max_wait=PLACE_HERE_MAX_WAIT, freed=True)
        return len(grant.granted), here

    def _send_placements(
        self, batch_id: str, granted: list[tuple[str, float]], granted_at: float, freed: bool = False
    ) -> None:
        """One `place_call` per granted call; when many are granted at once (and no calls-per-
        second limit makes each wait for its own instant), `place_calls` tasks of a few calls
        each: a task costs more than placing a call, and a few tasks per worker process keep
        the whole fleet busy."""
        size = 1 if self.settings.cps_limit else min(PLACE_CHUNK_MAX, len(granted) // PLACE_SPREAD)
        if size <= 1:
            for call_id, score in granted:
                self.tasks.place_call(
                    batch_id, call_id, gates_mod.priority_of(score), granted_at=granted_at, freed=freed
                )
            return
        for priority, same in itertools.groupby(granted, key=lambda g: gates_mod.priority_of(g[1])):
            ids = [call_id for call_id, _ in same]
            for start in range(0, len(ids), size):
                self.tasks.place_calls(
                    batch_id, ids[start : start + size], priority, granted_at=granted_at, freed=freed
                )

    def place_calls(
        self, batch_id: str, call_ids: list[str], granted_at: float | None = None, freed: bool = False
    ) -> None:
        """Place several granted calls of a batch, one after another."""
        for call_id in call_ids:
            self.place_call(call_id, granted_at=granted_at, batch_id=batch_id, freed=freed)

    def _check_expired(self, batch_id: str, call_ids: list[str]) -> None:
        """A lease ran out. Postgres says why: a live call keeps its slot; a call still waiting
        to be dialed (its task lost) is sent again; anything else gives the slot back."""
        with self.db.transaction() as cur:
            states = calls.call_states(cur, call_ids)
        keep = [c for c in call_ids if states.get(c) in LIVE_STATUSES or states.get(c) == CallStatus.QUEUED.value]
        self.gates.renew(batch_id, keep)
        for call_id in keep:
            if states[call_id] == CallStatus.QUEUED.value:
                log.warning(
                    "resending place_call, its lease expired before it dialed batch_id=%s call_id=%s", batch_id, call_id
                )
                self.tasks.place_call(batch_id, call_id, 0)
        freed = [c for c in call_ids if c not in keep]
        if freed:
            self.dispatch(batch_id, release=freed)

    def _schedule_wake(self, batch_id: str, due_in: float) -> None:
        """One idempotent wake-up per batch for its next due retry, never a long countdown."""
        countdown = min(due_in, self.settings.max_countdown_seconds)
        target = time.time() + countdown
        key = redis_keys.batch_wake(batch_id)
        current = self.gates.redis.get(key)
        if current is not None and time.time() < float(current) <= target + 0.05:
            return
        self.gates.redis.set(key, f"{target:.3f}", px=int((countdown + 5) * 1000))
        self.tasks.wake(batch_id, countdown)

    def rebuild(self, batch_id: str) -> bool:
        """Write a batch's Redis state again from Postgres. False when the batch is not active."""
        lock = self.gates.redis.lock(redis_keys.batch_rebuild_lock(batch_id), timeout=30)
        if not lock.acquire(blocking=False):
            return False
        try:
            with self.db.transaction() as cur:
                batch = batches.get_batch(cur, batch_id)
                if batch is None or batch["status"] not in ACTIVE_BATCH_STATUSES:
                    return False
                rows = calls.calls_for_rebuild(cur, batch_id)
            leased = set(self.gates.leases(batch_id))
            ready, delayed, live = [], [], []
            for row in rows:
                score = gates_mod.ready_score(row["priority"], row["seq"])
                if row["status"] == CallStatus.QUEUED.value and row["id"] not in leased:
                    ready.append((row["id"], score))
                elif row["status"] == CallStatus.SCHEDULED.value:
                    due = row["next_attempt_at"].timestamp() if row["next_attempt_at"] else time.time()
                    delayed.append((row["id"], score, due))
                elif row["status"] in LIVE_STATUSES:
                    live.append(row["id"])
            log.info(
                "rebuilt Redis state batch_id=%s ready=%d delayed=%d live=%d",
                batch_id,
                len(ready),
                len(delayed),
                len(live),
            )
            self.gates.load_batch(
                batch_id, batch["concurrency"], ready, delayed, live, paused=batch["status"] == BatchStatus.PAUSED
            )
            return True
        finally:
            with contextlib.suppress(LockError):
                lock.release()  # only while still ours: a rebuild past 30 s leaves the next one's alone

    # -- place --------------------------------------------------------------------------------

    def place_call(
        self,
        call_id: str,
        reserved_at: float | None = None,
        granted_at: float | None = None,
        batch_id: str | None = None,
        max_wait: float = MAX_IN_TASK_WAIT,
        freed: bool = False,
    ) -> None:
        """Dial one attempt of a call that holds a slot, at most once. `granted_at` (Unix seconds)
        is when the slot was given, for the dispatch-latency metric. With `batch_id` (the task
        carries it) and no calls-per-second limit, the call is not read first: its lease is
        checked in Redis and the attempt recorded in one statement, which finds out whether the
        call is still waiting to be dialed."""
        assert self.provider is not None
        call = None
        if batch_id is None or self.settings.cps_limit:
            with self.db.transaction() as cur:
                call = calls.load_call(cur, call_id)
            if call is None:
                return
            batch_id = call["batch_id"]
            if call["status"] not in PENDING_STATUSES:
                self._not_dialed(batch_id, call_id, call["status"])
                return
        if not self.gates.renew(batch_id, [call_id]):
            if call is None:
                self._not_dialed(batch_id, call_id)
            log.info(
                "not dialing, the call holds no slot (Redis state was lost) batch_id=%s call_id=%s", batch_id, call_id
            )
            return
        batch_started: dict[str, Any] | None = None
        while True:
            deadline = math.inf if call is None else self._wait_for_rate(call, reserved_at, max_wait)
            if deadline is None:
                return
            with self.db.transaction() as cur:
                started, started_now = calls.start_attempt(cur, call_id, self.provider.name)
            batch_started = batch_started or started_now
            if started is None:
                if call is None:
                    self._not_dialed(batch_id, call_id)
                return
            attempt = started["attempt_count"]
            if time.time() <= deadline:
                break
            # Recording the attempt took us past our creation instant: take it back and reserve
            # again, so no window of a second ever holds more creations than the limit.
            with self.db.transaction() as cur:
                calls.undo_attempt(cur, call_id, attempt)
            reserved_at = None
        request = DialRequest(call_id, attempt, started["phone_number"], started["script"], started["voice_id"])
        log.info("dialing call_id=%s batch_id=%s attempt=%d", call_id, batch_id, attempt)
        created_at = time.time()
        # `batch.started` is delivered after the create, never between the rate check and it:
        # the kick may send a task (a process's first send opens a broker connection, 15 ms and
        # more), and a create that late was past its calls-per-second instant (11 in a 1 s
        # window). And after the provider id is stored: a kick that fails must not lose it.
        kick = batch_started is not None and bool(batch_started["callback_url"])
        try:
            provider_call_id = self.provider.create_call(request)
        except ProviderError as exc:
            self._provider_refused(started, attempt, exc)
            if kick:
                self.kick_delivery(batch_id)
            return
        finally:
            if self.metrics is not None:
                waited = None if granted_at is None or reserved_at is not None else created_at - granted_at
                self.metrics.call_dialed(None if waited is None else max(0.0, waited), freed=freed)
        with self.db.autocommit() as cur:
            calls.set_provider_call_id(cur, call_id, attempt, provider_call_id)
        if kick:
            self.kick_delivery(batch_id)

    def _not_dialed(self, batch_id: str, call_id: str, status: str | None = None) -> None:
        """A call that was not dialed: if it is final, its slot is not anyone's."""
        if status is None:
            with self.db.transaction() as cur:
                status = calls.call_states(cur, [call_id]).get(call_id)
        if status is not None and status not in PENDING_STATUSES and status not in LIVE_STATUSES:
            self.dispatch(batch_id, release=[call_id])

    def _wait_for_rate(
        self, call: dict[str, Any], reserved_at: float | None, max_wait: float = MAX_IN_TASK_WAIT
    ) -> float | None:
        """Hold the call until the provider's calls-per-second limit lets it be created, for at
        most `max_wait` seconds in this task; returns the latest time the creation may happen
        (infinity without a limit), or None when it was handed to a later task instead."""
        limit = self.settings.cps_limit
        if not limit:
            return math.inf
        count, window = (1, 1.0 / limit) if limit < 1 else (int(limit), 1.0)
        while True:
            if reserved_at is None:
                reserved_at, now = self.gates.reserve_call_slot(
                    self.settings.provider_account, count, window + CPS_TOLERANCE + self.settings.cps_margin
                )
            else:
                now = time.time()
            wait = reserved_at - now
            if wait > max_wait:
                # That task sleeps out the last half second itself (up to MAX_IN_TASK_WAIT).
                countdown = min(max(0.0, wait - 0.5), self.settings.max_countdown_seconds)
                self.gates.renew(call["batch_id"], [call["id"]], extra_seconds=countdown)
                self.tasks.place_call(
                    call["batch_id"], call["id"], call["priority"], countdown=countdown, reserved_at=reserved_at
                )
                return None
            if wait > 0:
                time.sleep(wait)
            if time.time() <= reserved_at + CPS_TOLERANCE:
                return reserved_at + CPS_TOLERANCE
            reserved_at = None  # too late for our instant: the window may be full now

    def _provider_refused(self, call: dict[str, Any], attempt: int, exc: ProviderError) -> None:
        if exc.definite and exc.throttled:
            with self.db.transaction() as cur:
                undone = calls.undo_attempt(cur, call["id"], attempt)
            if undone:
                log.warning(
                    "provider throttled the call, waiting for a new slot batch_id=%s call_id=%s attempt=%d",
                    call["batch_id"],
                    call["id"],
                    attempt,
                )
                self.tasks.place_call(call["batch_id"], call["id"], call["priority"], countdown=1.0)
            return
        if exc.definite:
            self.record_event(
                ProviderEvent(
                    call["id"], attempt, AttemptStatus.ENDED, time.time(), Outcome.FAILED, error=str(exc)[:500]
                )
            )
            return
        log.warning(
            "create has an unknown result batch_id=%s call_id=%s attempt=%d error=%s",
            call["batch_id"],
            call["id"],
            attempt,
            quoted(exc),
        )

    # -- provider events ----------------------------------------------------------------------

    def record_responses(self, call_id: str, attempt: int, responses: list[dict[str, Any]]) -> int:
        """Store what the callee answered (input results), each response once."""
        with self.db.transaction() as cur:
            return calls.append_responses(cur, call_id, attempt, responses)

    def record_event(self, event: ProviderEvent) -> str:
        """Apply a provider event (from a webhook, the simulator or a poll) exactly once."""
        return self.record_events([event])[0]

    def record_events(self, events: list[ProviderEvent], gathered: Gathered | None = None) -> list[str]:
        """Apply events of one call in order, each exactly once, in one transaction (the events
        of a call that came due together); then act on where the call ended up: a freed slot is
        given to the next call by a `place_call` task. With `gathered`, that Redis work waits
        for `flush_events`, to be done once per batch for the events of many calls. Returns how
        each event applied."""
        return self.record_events_placing(events, place_here=False, gathered=gathered)[0]

    def record_events_placing(
        self,
        events: list[ProviderEvent],
        place_here: bool = True,
        gathered: Gathered | None = None,
    ) -> tuple[list[str], str | None]:
        """`record_events` for an event task: with `place_here`, a slot the events free is given
        to the next call in this task. Returns how each event applied, and the call placed here
        (tasks return it, so that Flower shows where each call was dialed). The reconciler does
        not place here: a sweep must not wait on the provider for every call it resolves."""
        if len({e.call_id for e in events}) != 1:
            raise ValueError("record_events takes events of one call")
        last = None
        with self.db.transaction() as cur:
            if len({e.attempt for e in events}) == 1:
                results = calls.apply_events(cur, events)
            else:
                results = [calls.apply_event(cur, event) for event in events]
            for result in results:
                if result.call is not None:
                    last = result
        work = Gathered() if gathered is None else gathered
        if last is not None:
            assert last.call is not None
            self._after_event(events[-1], last.call, last.applied, last.batch, last.due, work)
        placed = self.flush_events(work, place_here) if gathered is None else None
        return [result.applied for result in results], placed

    def _after_event(
        self,
        event: ProviderEvent,
        call: dict[str, Any],
        applied: str,
        batch: dict[str, Any] | None,
        due: datetime | None,
        work: Gathered,
    ) -> None:
        """Note how the event leaves the call's slot: renewed, parked for a retry, or freed."""
        batch_id = call["batch_id"]
        if applied == Applied.LIVE:
            work.renew.setdefault(batch_id, []).append(event.call_id)
        elif applied == Applied.SCHEDULED:
            assert due is not None
            score = gates_mod.ready_score(call["priority"], call["seq"])
            work.release.setdefault(batch_id, []).append(event.call_id)
            work.delay.setdefault(batch_id, []).append((event.call_id, score, due.timestamp()))
        elif applied == Applied.FINAL:
            log.info("call finished call_id=%s batch_id=%s outcome=%s", event.call_id, batch_id, call["outcome"])
            if self.metrics is not None:
                self.metrics.call_finished(call["outcome"])
            finished = batch is not None and batch["finished_at"] is not None
            if batch is not None and batch["callback_url"]:
                work.kick[batch_id] = work.kick.get(batch_id, False) or finished
            work.release.setdefault(batch_id, []).append(event.call_id)
            if batch is not None and finished:
                log.info("batch finished batch_id=%s status=%s", batch_id, batch["status"])
                work.finished.add(batch_id)

    def flush_events(self, work: Gathered, place_here: bool = False) -> str | None:
        """Do the Redis work that applied events left, in one round of calls per batch: kick
        delivery first (placing a call here may take a provider round trip), renew the slots of
        live calls, give freed slots to the next calls (with `place_here`, the first of them in
        this task), and forget finished batches. Each piece leaves `work` once done: when one
        raises, what is left stays for the caller to flush again. Returns the call placed here."""
        for batch_id, urgent in list(work.kick.items()):
            self.kick_delivery(batch_id, urgent=urgent)
            del work.kick[batch_id]
        for batch_id, ids in list(work.renew.items()):
            self.gates.renew(batch_id, ids)
            del work.renew[batch_id]
        placed = None
        for batch_id in list(work.release):  # a call parked for a retry is released too
            here = self._dispatch(
                batch_id,
                work.release[batch_id],
                work.delay.get(batch_id),
                place_here and placed is None and batch_id not in work.finished,
            )[1]
            del work.release[batch_id]
            work.delay.pop(batch_id, None)
            placed = placed or here
        for batch_id in list(work.finished):
            self.gates.forget(batch_id)  # nothing of a finished batch stays in Redis
            work.finished.discard(batch_id)
        return placed

    # -- delivery kicks -------------------------------------------------------------------------

    @functools.cached_property
    def _kicks(self) -> Kicks:
        return Kicks(self.settings, self.gates.redis)

    def kick_delivery(self, batch_id: str, urgent: bool = False) -> None:
        """Have the batch's new events delivered: by the relay already running or queued for the
        batch, else by a new `deliver` task. That task starts DELIVERY_GATHER_SECONDS later, so
        that one relay takes the events of many calls ending close together; an `urgent` kick
        (the batch's last events) starts one at once."""
        if self._kicks.needs_task(batch_id, urgent):
            self.tasks.deliver(batch_id, countdown=0 if urgent else DELIVERY_GATHER_SECONDS)

    def delivery_starting(self, batch_id: str) -> None:
        """A `deliver` task begins: events written from now on need a relay of their own."""
        self._kicks.task_starting(batch_id)

    def deliver(self, relay: Relay, batch_id: str) -> int:
        """A `deliver` task: run the batch's relay, and have it run again when it asks to be
        (unless another retry of the batch is scheduled already); the events delivered."""
        self.delivery_starting(batch_id)
        outcome = relay.run(batch_id)
        if outcome.retry_in is not None:
            countdown = min(outcome.retry_in, self.settings.max_countdown_seconds)
            if self._kicks.retry_scheduled(batch_id, countdown):
                self.tasks.deliver(batch_id, countdown=countdown)
        return outcome.delivered

    def redeliver(self, batch_id: str) -> bool:
        """The sweep's kick for a batch with due events: a `deliver` task now, unless a relay
        runs it, a task is queued for it or a retry is scheduled (each mark expires by itself,
        so a lost task is sent again by a later sweep). True when a task was sent."""
        if not self._kicks.needs_task(batch_id):
            return False
        self.tasks.deliver(batch_id)
        return True
