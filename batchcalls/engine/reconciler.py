"""The periodic sweep that makes Redis and the task queue agree with Postgres again: rebuilds
lost Redis state, renews the slots of live calls, wakes due retries, starts and expires batches
whose wake-up was lost, resolves attempts whose provider events stopped, and re-kicks
undelivered events. Losing all of Redis loses no call."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import LockError

from batchcalls.adapters.logs import quoted
from batchcalls.adapters.store import batches, calls, contacts, outbox, tenants
from batchcalls.adapters.telephony.base import LiveAttempt
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import LIVE_STATUSES, PENDING_STATUSES, AttemptStatus, CallStatus, Outcome, values
from batchcalls.engine import Engine

log = logging.getLogger("batchcalls.reconciler")

# An attempt that has heard nothing for this many stale periods, and that the provider cannot
# account for, is ended as failed: it may have been dialed, so it is never dialed again.
GIVE_UP_FACTOR = 4


@dataclass
class Sweep:
    rebuilt: int = 0
    dispatched: int = 0
    resolved: int = 0
    deliveries: int = 0
    event_drains: int = 0
    expired: int = 0
    started: int = 0


def reconcile(engine: Engine) -> Sweep:
    """One sweep; a sweep already running elsewhere in the fleet makes this one a no-op."""
    # redis-py's Lock: a token of its own, released only while it is still ours (a sweep that
    # outlived its lock must not delete the next sweep's).
    lock = engine.gates.reconcile_lock(timeout=max(engine.settings.reconcile_seconds * 4, 10))
    if not lock.acquire(blocking=False):
        return Sweep()
    try:
        return _sweep(engine)
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _sweep(engine: Engine) -> Sweep:
    sweep = Sweep()
    sweep.expired = _expire(engine)
    sweep.started = _start(engine)
    with engine.db.transaction() as cur:
        active = batches.active_batches(cur)
        due_retry = set(calls.batches_with_due_retries(cur))
        due_events = outbox.batches_with_due_events(cur)
        stale = calls.stale_attempts(cur, engine.settings.stale_attempt_seconds)
        contacts.forget_old_dials(cur)  # dials no contact limit counts any more
    for batch in active:
        batch_id = batch["id"]
        if engine.gates.loading(batch_id):
            # Its state is being written (a large submit, or a rebuild): read half-written,
            # it looks lost, and rebuilding it read every waiting call into this process.
            continue
        # Redis first, Postgres second: a call that moves on between the two reads is then
        # never counted as lost (see `_lost_calls`). Read the other way round, a call dialed
        # and ended in between was waiting in Postgres and in no Redis queue: a running
        # 100,000-call batch was rebuilt (all its waiting calls read into a worker) every sweep.
        present = engine.gates.exists(batch_id)
        depth = engine.gates.depth(batch_id)
        with engine.db.transaction() as cur:
            counts = batches.status_counts(cur, batch_id)
            live_ids = [r["id"] for r in calls.list_live(cur, batch_id)]
        lost = not present or _lost_calls(depth, counts)
        if lost and engine.rebuild(batch_id):
            sweep.rebuilt += 1
        engine.gates.renew(batch_id, live_ids)
        if batch_id in due_retry or counts.get(CallStatus.QUEUED.value):
            sweep.dispatched += engine.dispatch(batch_id)
    for attempt in stale:
        sweep.resolved += _resolve_stale(engine, attempt)
    for batch_id in due_events:
        sweep.deliveries += engine.redeliver(batch_id)
    # Provider events queued for the workers that nobody is applying (their task was lost).
    sweep.event_drains = engine.tasks.recover_events()
    if engine.settings.cps_limit:
        _refresh_ceilings(engine, {batch["tenant_id"] for batch in active})
    # Batches waiting for calls-per-second turns whose pacer died.
    engine.kick_pacer()
    return sweep


def _expire(engine: Engine) -> int:
    """Expire the batches whose `expires_at` has passed (their wake-up lost, or a call waiting
    again since), and arm a wake-up at it for those whose `expires_at` comes before the next
    sweep. Returns how many calls were ended."""
    with engine.db.transaction() as cur:
        expiring = batches.expiring_batches(cur, engine.settings.reconcile_seconds)
    ended = 0
    for batch_id, due_in in expiring:
        if due_in <= 0:
            ended += engine.expire(batch_id)
        else:
            engine.tasks.expire(batch_id, countdown=due_in)
    return ended


def _start(engine: Engine) -> int:
    """Start the scheduled batches whose `start_at` has passed (their wake-up lost), and arm a
    wake-up at it for those whose `start_at` comes before the next sweep. Returns how many
    batches were started."""
    with engine.db.transaction() as cur:
        starting = batches.starting_batches(cur, engine.settings.reconcile_seconds)
    started = 0
    for batch_id, due_in in starting:
        if due_in <= 0:
            started += engine.start(batch_id)
        else:
            engine.tasks.start(batch_id, countdown=due_in)
    return started


# A turn whose call was never reported (its pacer died) stops counting under the tenant's
# concurrency ceiling after this long.
TURN_FORGOTTEN_MS = 60_000


def _refresh_ceilings(engine: Engine, tenant_ids: set[int]) -> None:
    """Write the ceilings of the tenants with active batches to the dial scheduler (changed by
    `keys policy`, or lost with Redis), and drop from a tenant's count of calls holding a slot
    those that no longer hold one (a release the scheduler never heard of)."""
    account = engine.settings.provider_account
    with engine.db.transaction() as cur:
        own = tenants.policies_by_id(cur, sorted(tenant_ids))
    now_ms = time.time() * 1000
    for tenant_id, policy in own.items():
        ceilings = policy.over(engine.settings.tenant_defaults)
        tenant = str(tenant_id)
        engine.gates.set_tenant_limits(account, tenant, ceilings.max_calls_per_second, ceilings.max_concurrent_calls)
        counted = engine.gates.tenant_live(account, tenant)
        turns = [m for m in counted if ":" in m]
        call_ids = [m for m in counted if ":" not in m]
        with engine.db.transaction() as cur:
            states = calls.call_states(cur, call_ids)
        holding = LIVE_STATUSES | {CallStatus.QUEUED.value}
        gone = [c for c in call_ids if states.get(c) not in holding]
        gone += [m for m in turns if now_ms - float(m.split(":", 1)[0]) > TURN_FORGOTTEN_MS]
        engine.gates.forget_live(account, tenant, gone)


def _lost_calls(depth: tuple[int, int, int], counts: dict[str, int]) -> bool:
    """True when Postgres has waiting calls that no Redis queue or slot accounts for: more
    waiting calls than the ready and delayed queues hold plus the slots leased to calls not yet
    live. `depth` (ready, delayed, leased) must be read before `counts` (calls by status): calls
    only move from a Redis queue to a slot, from a slot to live, and from live to final or to
    waiting again, so every call waiting at the second read was queued or leased at the first,
    and the test holds without a false alarm however the batch moves in between."""
    ready, delayed, leased = depth
    waiting = sum(counts.get(s, 0) for s in values(PENDING_STATUSES))
    live = sum(counts.get(s, 0) for s in values(LIVE_STATUSES))
    return waiting > ready + delayed + max(0, leased - live)


def _resolve_stale(engine: Engine, attempt: dict[str, Any]) -> int:
    """Ask the provider about an attempt whose events stopped; end it if nobody knows it."""
    live = LiveAttempt(
        call_id=attempt["call_id"],
        attempt=attempt["number"],
        phone_number=attempt["phone_number"],
        status=attempt["status"],
        provider_call_id=attempt["provider_call_id"],
        dialed_at=attempt["dialed_at"].timestamp(),
    )
    event = engine.provider.poll(live) if engine.provider is not None else None
    if event is not None and event.status != AttemptStatus(attempt["status"]):
        log.info(
            "recovered a missed event batch_id=%s call_id=%s attempt=%d status=%s",
            attempt["batch_id"],
            live.call_id,
            live.attempt,
            event.status.value,
        )
        engine.record_event(event)
        return 1
    if event is not None:  # the provider knows the call and it has not moved on: a long call
        with engine.db.transaction() as cur:
            calls.touch_attempt(cur, live.call_id, live.attempt)
        return 0
    silent = time.time() - attempt["last_event_at"].timestamp()
    if silent < engine.settings.stale_attempt_seconds * GIVE_UP_FACTOR:
        return 0
    reason = (
        "the provider never confirmed this call"
        if live.provider_call_id is None
        else f"no provider event for {silent:.0f}s"
    )
    log.warning(
        "ending a silent attempt as failed batch_id=%s call_id=%s attempt=%d reason=%s",
        attempt["batch_id"],
        live.call_id,
        live.attempt,
        quoted(reason),
    )
    engine.record_event(
        ProviderEvent(
            live.call_id,
            live.attempt,
            AttemptStatus.ENDED,
            time.time(),
            Outcome.FAILED,
            live.provider_call_id,
            error=reason,
        )
    )
    return 1
