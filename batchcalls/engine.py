"""The engine's use cases: submit a batch, dispatch its calls into free slots, place one call,
and apply a provider event. Postgres decides every state; Redis gates who may dial when.

Tasks call these and nothing else; the engine never imports Celery. It reaches the task queue
through the small `TaskQueue` interface below.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from batchcalls import gates as gates_mod
from batchcalls.errors import ProviderError
from batchcalls.gates import Gates
from batchcalls.metrics import Metrics
from batchcalls.models import NewBatch, ProviderEvent
from batchcalls.states import AttemptStatus, CallStatus, Outcome
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


class TaskQueue(Protocol):
    def dispatch(self, batch_id: str, priority: int) -> None: ...
    def place_call(self, batch_id: str, call_id: str, priority: int, countdown: float = 0,
                   reserved_at: float | None = None, granted_at: float | None = None) -> None: ...
    def wake(self, batch_id: str, countdown: float) -> None: ...
    def deliver(self, batch_id: str, countdown: float = 0) -> None: ...
    def record_event(self, event: ProviderEvent, countdown: float = 0) -> None: ...
    def record_responses(self, call_id: str, attempt: int, responses: list[dict[str, Any]]) -> None: ...


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
        dispatcher. Returns (batch id, created)."""
        submitted = batches.insert_batch(
            self.db, tenant.id, batch, idempotency_key=idempotency_key,
            request_hash=request_hash(body), max_queued_calls=self.settings.max_queued_calls,
        )
        if submitted.created:
            self.gates.load_batch(
                submitted.batch_id, batch.concurrency,
                ((cid, gates_mod.ready_score(prio, seq)) for cid, seq, prio in submitted.calls),
            )
            self.tasks.dispatch(submitted.batch_id, batch.priority)
        return submitted.batch_id, submitted.created

    # -- dispatch -----------------------------------------------------------------------------

    def dispatch(
        self, batch_id: str, release: list[str] | None = None,
        delay: list[tuple[str, int, float]] | None = None,
    ) -> int:
        """Release ended calls' slots, park retries, and send one `place_call` per free slot.
        Returns how many calls were given a slot."""
        grant = self.gates.acquire(batch_id, release or (), delay or ())
        if grant.missing:
            if not self.rebuild(batch_id):
                return 0
            grant = self.gates.acquire(batch_id)
            if grant.missing:
                return 0
        for call_id, score in grant.granted:
            self.tasks.place_call(batch_id, call_id, gates_mod.priority_of(score), granted_at=grant.now)
        if grant.expired:
            self._check_expired(batch_id, grant.expired)
        if grant.next_due_in is not None:
            self._schedule_wake(batch_id, grant.next_due_in)
        return len(grant.granted)

    def _check_expired(self, batch_id: str, call_ids: list[str]) -> None:
        """A lease ran out. Postgres says why: a live call keeps its slot; a call still waiting
        to be dialed (its task lost) is sent again; anything else gives the slot back."""
        with self.db.transaction() as cur:
            states = calls.call_states(cur, call_ids)
        keep = [c for c in call_ids if states.get(c) in calls.LIVE or states.get(c) == CallStatus.QUEUED.value]
        self.gates.renew(batch_id, keep)
        for call_id in keep:
            if states[call_id] == CallStatus.QUEUED.value:
                log.warning("resending place_call for %s: its lease expired before it dialed", call_id)
                self.tasks.place_call(batch_id, call_id, 0)
        freed = [c for c in call_ids if c not in keep]
        if freed:
            self.dispatch(batch_id, release=freed)

    def _schedule_wake(self, batch_id: str, due_in: float) -> None:
        """One idempotent wake-up per batch for its next due retry, never a long countdown."""
        countdown = min(due_in, self.settings.max_countdown_seconds)
        target = time.time() + countdown
        key = f"bc:{{{batch_id}}}:wake"
        current = self.gates.redis.get(key)
        if current is not None and time.time() < float(current) <= target + 0.05:
            return
        self.gates.redis.set(key, f"{target:.3f}", px=int((countdown + 5) * 1000))
        self.tasks.wake(batch_id, countdown)

    def rebuild(self, batch_id: str) -> bool:
        """Write a batch's Redis state again from Postgres. False when the batch is not active."""
        lock = self.gates.redis.set(f"bc:{{{batch_id}}}:rebuild", "1", nx=True, px=30_000)
        if not lock:
            return False
        try:
            with self.db.transaction() as cur:
                batch = batches.get_batch(cur, batch_id)
                if batch is None or batch["status"] not in batches.ACTIVE:
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
                elif row["status"] in calls.LIVE:
                    live.append(row["id"])
            log.info("rebuilt Redis state of %s: %d ready, %d delayed, %d live",
                     batch_id, len(ready), len(delayed), len(live))
            self.gates.load_batch(batch_id, batch["concurrency"], ready, delayed, live,
                                  paused=batch["status"] == "paused")
            return True
        finally:
            self.gates.redis.delete(f"bc:{{{batch_id}}}:rebuild")

    # -- place --------------------------------------------------------------------------------

    def place_call(self, call_id: str, reserved_at: float | None = None, granted_at: float | None = None) -> None:
        """Dial one attempt of a call that holds a slot, at most once. `granted_at` (Unix seconds)
        is when the slot was given, for the dispatch-latency metric."""
        assert self.provider is not None
        with self.db.transaction() as cur:
            call = calls.load_call(cur, call_id)
        if call is None:
            return
        batch_id = call["batch_id"]
        if call["status"] not in calls.DIALABLE:
            if call["status"] not in calls.LIVE:  # final: the slot is not anyone's
                self.dispatch(batch_id, release=[call_id])
            return
        if not self.gates.renew(batch_id, [call_id]):
            log.info("not dialing %s: it holds no slot (Redis state was lost)", call_id)
            return
        if not self._wait_for_rate(call, reserved_at):
            return
        with self.db.transaction() as cur:
            started, batch_started = calls.start_attempt(cur, call_id, self.provider.name)
        if started is None:
            return
        attempt = started["attempt_count"]
        if batch_started is not None and batch_started["callback_url"]:
            self.tasks.deliver(batch_id)
        request = DialRequest(call_id, attempt, started["phone_number"], started["script"], started["voice_id"])
        log.info("dialing call_id=%s batch_id=%s attempt=%d", call_id, batch_id, attempt)
        if self.metrics is not None:
            self.metrics.call_dialed()
            if granted_at is not None and reserved_at is None:
                self.metrics.dispatch_latency(max(0.0, time.time() - granted_at))
        try:
            provider_call_id = self.provider.create_call(request)
        except ProviderError as exc:
            self._provider_refused(started, attempt, exc)
            return
        with self.db.transaction() as cur:
            calls.set_provider_call_id(cur, call_id, attempt, provider_call_id)

    def _wait_for_rate(self, call: dict[str, Any], reserved_at: float | None) -> bool:
        """Hold the call until the provider's calls-per-second limit lets it be created.
        False when it was handed to a later task instead."""
        limit = self.settings.cps_limit
        if not limit:
            return True
        count, window = (1, 1.0 / limit) if limit < 1 else (int(limit), 1.0)
        while True:
            if reserved_at is None:
                reserved_at, now = self.gates.reserve_call_slot(
                    self.settings.provider_account, count, window + CPS_TOLERANCE)
            else:
                now = time.time()
            wait = reserved_at - now
            if wait > MAX_IN_TASK_WAIT:
                countdown = min(wait - 0.5, self.settings.max_countdown_seconds)
                self.gates.renew(call["batch_id"], [call["id"]], extra_seconds=countdown)
                self.tasks.place_call(call["batch_id"], call["id"], call["priority"], countdown=countdown,
                                      reserved_at=reserved_at)
                return False
            if wait > 0:
                time.sleep(wait)
            if time.time() <= reserved_at + CPS_TOLERANCE:
                return True
            reserved_at = None  # too late for our instant: the window may be full now

    def _provider_refused(self, call: dict[str, Any], attempt: int, exc: ProviderError) -> None:
        if exc.definite and exc.throttled:
            with self.db.transaction() as cur:
                undone = calls.undo_attempt(cur, call["id"], attempt)
            if undone:
                log.warning("provider throttled %s; waiting for a new slot", call["id"])
                self.tasks.place_call(call["batch_id"], call["id"], call["priority"], countdown=1.0)
            return
        if exc.definite:
            self.record_event(ProviderEvent(call["id"], attempt, AttemptStatus.ENDED, time.time(),
                                            Outcome.FAILED, error=str(exc)[:500]))
            return
        log.warning("create for %s attempt %d has an unknown result: %s", call["id"], attempt, exc)

    # -- provider events ----------------------------------------------------------------------

    def record_responses(self, call_id: str, attempt: int, responses: list[dict[str, Any]]) -> int:
        """Store what the callee answered (input results), each response once."""
        with self.db.transaction() as cur:
            return calls.append_responses(cur, call_id, attempt, responses)

    def record_event(self, event: ProviderEvent) -> str:
        """Apply a provider event (from a webhook, the simulator or a poll) exactly once."""
        with self.db.transaction() as cur:
            applied, batch, due = calls.apply_event(cur, event)
            call = calls.load_call(cur, event.call_id) if applied != Applied.IGNORED else None
        if call is None:
            return applied
        batch_id = call["batch_id"]
        if applied == Applied.LIVE:
            self.gates.renew(batch_id, [event.call_id])
        elif applied == Applied.SCHEDULED:
            assert due is not None
            score = gates_mod.ready_score(call["priority"], call["seq"])
            self.dispatch(batch_id, release=[event.call_id], delay=[(event.call_id, score, due.timestamp())])
        elif applied == Applied.FINAL:
            log.info("call finished call_id=%s batch_id=%s outcome=%s", event.call_id, batch_id, call["outcome"])
            if self.metrics is not None:
                self.metrics.call_finished(call["outcome"])
            self.dispatch(batch_id, release=[event.call_id])
            if batch is not None and batch["finished_at"] is not None:
                log.info("batch finished batch_id=%s status=%s", batch_id, batch["status"])
                self.gates.forget(batch_id)  # nothing of a finished batch stays in Redis
            if batch is not None and batch["callback_url"]:
                self.tasks.deliver(batch_id)
        return applied
