"""The outbox relay: POST each batch's events to its callback URL, signed, in order, at least
once, retrying with exponential backoff for longer than a day.

One relay runs per batch at a time (a Redis lock); a kick that finds the lock taken leaves a
flag that the running relay checks after it lets go, so no event waits for the next sweep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import urllib3
from redis.exceptions import LockError
from redis.lock import Lock

from batchcalls.adapters import redis_keys
from batchcalls.adapters.delivery.http import CallbackHTTP
from batchcalls.adapters.delivery.leases import DeliveryLeases
from batchcalls.adapters.delivery.targets import (
    CallbackTarget,
    Resolver,
    ResolveTimeout,
    check_callback_url,
    connect_addresses,
    default_resolve,
    resolver_until,
)
from batchcalls.adapters.logs import quoted, redact_in, redact_url
from batchcalls.adapters.metrics import Metrics
from batchcalls.adapters.store import batches, outbox
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.tenants import webhook_secrets_for_batch
from batchcalls.domain.errors import InvalidRequest
from batchcalls.domain.events import backoff_seconds
from batchcalls.domain.signing import signature_headers
from config.settings import Settings

log = logging.getLogger("batchcalls.delivery")

# The relay's lock outlives one POST (the webhook timeout) by this much, so a relay killed
# mid-delivery holds up its batch's events for seconds, not minutes. Right before a POST the lock
# is renewed when its last renewal was sent more than half this margin ago, and the POST's
# wall-clock deadline (resolving the callback host, then connect, send, status, headers and
# reply: batchcalls/adapters/delivery/http.py) starts after that check: the lock is then provably ours for
# the whole POST with at least half the margin to spare, at one Redis round trip every few
# seconds instead of one per event. The tenant's delivery lease (batchcalls/adapters/delivery/leases.py)
# has the same lifetime and cadence, and is taken before anything else is done for an event.
LOCK_MARGIN_SECONDS = 5

# A batch whose tenant already has its share of deliveries running tries again this long after
# (plus up to as much again at random, so that a tenant's waiting batches do not come back
# together); its events are not touched meanwhile.
TENANT_BUSY_RETRY_SECONDS = 1.0


# A kick marks the batch dirty; it needs a `deliver` task only when no relay holds the lock (a
# running relay looks at the mark after it lets go), none is queued and not yet started, and no
# retry is scheduled (the batch's first undelivered event, or its tenant's share, is not free
# before it: a task sooner would only schedule a second retry).
# An urgent kick (the batch's last event) wants a task now even when a delayed one is queued.
_KICK = """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then
  return 0
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
  return 1
end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
# How long a queued `deliver` task stands for its batch's later events. The mark expires by
# itself, so a lost task holds events up for seconds at most (and the reconciler re-kicks).
QUEUED_TASK_MS = 5000


# A scheduled retry's mark lasts its countdown less this share of it (at most a second): gone
# just before the task starts, so that task (or, when it was lost, the next sweep) may schedule
# the next retry, and a task that starts a little early on a worker whose clock is ahead of
# Redis's does not find its own mark and drop its chain.
RETRY_MARK_SLACK = 0.1
RETRY_MARK_SLACK_MAX_MS = 1000


def _lock_ms(settings: Settings) -> int:
    return int((settings.webhook_timeout_seconds + LOCK_MARGIN_SECONDS) * 1000)


class Kicks:
    """Coalesces delivery kicks: a batch that ends a call every millisecond needs one relay
    running, not one `deliver` task per event."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.redis = client
        self.lock_ms = _lock_ms(settings)
        self._kick = client.register_script(_KICK)

    def needs_task(self, batch_id: str, *, urgent: bool = False) -> bool:
        """Note that the batch has new events; True when a `deliver` task must be sent for them
        (`urgent`: even if a delayed one is queued)."""
        return bool(
            self._kick(
                keys=list(redis_keys.relay_keys(batch_id)),
                args=[self.lock_ms * 4, QUEUED_TASK_MS, "1" if urgent else "0"],
            )
        )

    def task_starting(self, batch_id: str) -> None:
        """A `deliver` task begins: later events need a task of their own (or this relay)."""
        self.redis.delete(redis_keys.relay_queued(batch_id))

    def retry_scheduled(self, batch_id: str, countdown: float) -> bool:
        """Note that a `deliver` task will run in `countdown` seconds; False when another retry
        is already scheduled (then that one runs the batch, and no second task is sent): one
        chain of retries per batch, however many tasks found it waiting."""
        mark_ms = int(countdown * 1000)
        mark_ms -= min(int(mark_ms * RETRY_MARK_SLACK), RETRY_MARK_SLACK_MAX_MS)
        return bool(self.redis.set(redis_keys.relay_retry(batch_id), "1", nx=True, px=max(mark_ms, 1)))


@dataclass(frozen=True)
class Outcome:
    delivered: int
    retry_in: float | None  # seconds until the first event that failed is due again


@dataclass
class _Held:
    """A relay's lock and when its last acquisition or renewal was sent (monotonic seconds)."""

    lock: Lock
    sent_at: float

    def still_ours(self) -> bool:
        """True when the lock is ours for one more POST; False when it expired and passed to
        another relay. Renewed (compared and renewed in one script) when the last renewal was
        sent more than half of LOCK_MARGIN_SECONDS ago."""
        now = time.monotonic()
        if now - self.sent_at <= LOCK_MARGIN_SECONDS / 2:
            return True
        try:
            if not self.lock.reacquire():
                return False
        except LockError:
            return False
        self.sent_at = now
        return True


@dataclass
class _TenantTurn:
    """A relay's share of its tenant's deliveries: taken before its first POST, renewed on the
    relay lock's cadence, given back when the relay lets go."""

    leases: DeliveryLeases
    tenant_id: int
    token: str
    batch_id: str  # its place in line when the share is full
    sent_at: float | None = None

    def ours(self) -> bool:
        now = time.monotonic()
        if self.sent_at is not None and now - self.sent_at <= LOCK_MARGIN_SECONDS / 2:
            return True
        if not self.leases.take(self.tenant_id, self.token, waiter=self.batch_id):
            return False
        self.sent_at = now
        return True

    def end(self) -> None:
        if self.sent_at is not None:
            self.leases.give_back(self.tenant_id, self.token)
            self.sent_at = None


class Relay:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        client: redis.Redis,
        http: CallbackHTTP | None = None,
        metrics: Metrics | None = None,
        *,
        resolve: Resolver = default_resolve,
    ) -> None:
        self.metrics = metrics
        self.settings = settings
        self.db = db
        self.redis = client
        # urllib3 (what requests is built on) without requests' per-request layers: a relay
        # POSTs one event after another, and requests spent more time than the receiver did.
        # Keep-alive, pinned to the checked address, within a deadline, a bounded reply.
        self.http = http or CallbackHTTP()
        # Resolves callback hosts for the check; the POST goes to an address it approved.
        self.resolve = resolve
        self.leases = DeliveryLeases(
            client, limit=settings.webhook_tenant_concurrency, lease_seconds=_lock_ms(settings) / 1000
        )

    def run(self, batch_id: str) -> Outcome:
        """Deliver what is due for one batch; safe to call any number of times at once."""
        lock_key, dirty_key = redis_keys.relay_lock(batch_id), redis_keys.relay_dirty(batch_id)
        lock_ms = _lock_ms(self.settings)
        self.redis.set(dirty_key, "1", px=lock_ms * 4)
        total, retry_in = 0, None
        while True:
            # redis-py's Lock: a token of its own, renewed and released only while still ours
            # (compared and changed in one script; a GET then a DEL had deleted the lock of a
            # relay that took it over, see tests/integration/test_relay_concurrency.py).
            lock = self.redis.lock(lock_key, timeout=lock_ms / 1000, thread_local=False)
            held = _Held(lock, time.monotonic())
            if not lock.acquire(blocking=False):
                return Outcome(total, None)
            try:
                self.redis.delete(dirty_key)
                delivered, retry_in = self._deliver_due(batch_id, held.still_ours)
                total += delivered
            finally:
                with contextlib.suppress(LockError):
                    lock.release()
            if not self.redis.exists(dirty_key):
                return Outcome(total, retry_in)

    def _deliver_due(self, batch_id: str, still_ours: Callable[[], bool]) -> tuple[int, float | None]:
        with self.db.transaction() as cur:
            batch = batches.get_batch(cur, batch_id)
            secrets = webhook_secrets_for_batch(cur, batch_id)
        if batch is None or not batch["callback_url"]:
            return 0, None
        url = batch["callback_url"]
        turn = _TenantTurn(self.leases, batch["tenant_id"], uuid.uuid4().hex, batch_id)
        try:
            return self._deliver_pages(batch_id, url, secrets, still_ours, turn)
        finally:
            turn.end()

    def _deliver_pages(
        self, batch_id: str, url: str, secrets: tuple[str, ...], still_ours: Callable[[], bool], turn: _TenantTurn
    ) -> tuple[int, float | None]:
        delivered = 0
        while True:
            with self.db.transaction() as cur:
                pending = outbox.pending_events(cur, batch_id)
            if not pending:
                return delivered, None
            done: list[int] = []  # delivered, marked so in one statement when the page ends
            try:
                for event in pending:
                    wait = (event["next_attempt_at"] - datetime.now(UTC)).total_seconds()
                    if wait > 0:
                        return delivered, wait  # in order: later events wait behind this one
                    # The tenant's share first: a tenant whose name resolves slowly holds no
                    # more delivery processes than one whose receiver answers slowly.
                    if not turn.ours():
                        return delivered, TENANT_BUSY_RETRY_SECONDS * (1 + random.random())
                    if not still_ours():
                        return delivered, None
                    # From the lock's check: the resolution and the POST share one deadline,
                    # which the lock outlives (LOCK_MARGIN_SECONDS).
                    deadline = time.monotonic() + self.settings.webhook_timeout_seconds
                    error = self._post(
                        self._target(url, deadline), secrets, event["id"], event["payload"], deadline=deadline
                    )
                    if error is None:
                        done.append(event["seq"])
                        delivered += 1
                        continue
                    if self.metrics is not None:
                        self.metrics.webhook(delivered=False)
                    with self.db.transaction() as cur:
                        age_hours = (datetime.now(UTC) - event["created_at"]).total_seconds() / 3600
                        give_up = age_hours > self.settings.webhook_retry_hours
                        retry_in = backoff_seconds(event["delivery_attempts"] + 1)
                        outbox.mark_failed(cur, event["seq"], error, retry_in, give_up)
                    log.warning(
                        "event delivery failed batch_id=%s event_id=%s url=%s error=%s retry_in=%s",
                        batch_id,
                        event["id"],
                        quoted(redact_url(url)),
                        quoted(redact_in(error, url)),
                        "never" if give_up else f"{retry_in:.1f}",
                    )
                    if not give_up:
                        return delivered, retry_in
            finally:
                # A relay that dies before this sends these events again: at least once.
                if done:
                    with self.db.transaction() as cur:
                        outbox.mark_delivered_many(cur, done)
                    if self.metrics is not None:
                        self.metrics.webhook(delivered=True, count=len(done))

    def _target(self, url: str, deadline: float) -> tuple[CallbackTarget, tuple[str, ...]] | str:
        """Where to POST (the checked target and the addresses to connect to), or why not; the
        name resolved before `deadline` (``time.monotonic()``)."""
        resolve = resolver_until(self.resolve, deadline)
        try:
            target = check_callback_url(
                url,
                allow_http=self.settings.allow_http_callbacks,
                allowlist=self.settings.callback_allowlist,
                resolve=resolve,
            )
            return target, connect_addresses(target, resolve)
        except ResolveTimeout:
            return "callback host did not resolve within the webhook timeout"
        except InvalidRequest as exc:
            return f"callback URL refused: {exc.message}"
        except (OSError, UnicodeError) as exc:
            return f"callback URL refused: host does not resolve ({type(exc).__name__})"

    def _post(
        self,
        target: tuple[CallbackTarget, tuple[str, ...]] | str,
        secrets: tuple[str, ...],
        event_id: str,
        payload: dict[str, Any],
        *,
        deadline: float,
    ) -> str | None:
        """POST one event before `deadline` (``time.monotonic()``); None on a 2xx answer, else
        what went wrong."""
        if isinstance(target, str):
            return target
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Batchcalls-Webhooks/1"}
        headers.update(signature_headers(secrets, event_id, body, int(time.time())))
        try:
            status = self.http.post(target[0], target[1], body, headers, timeout=deadline - time.monotonic())
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"
