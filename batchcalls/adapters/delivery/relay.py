"""The outbox relay: POST each batch's events to its callback URL, signed, in order, at least
once, retrying with exponential backoff for longer than a day.

One relay runs per batch at a time (a Redis lock); a kick that finds the lock taken leaves a
flag that the running relay checks after it lets go, so no event waits for the next sweep
(kicks.py). One POST, from the URL check to its answer, is posting.py's.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from batchcalls.adapters import redis_keys
from batchcalls.adapters.delivery.http import CallbackHTTP
from batchcalls.adapters.delivery.leases import DeliveryLeases
from batchcalls.adapters.delivery.posting import EventPoster
from batchcalls.adapters.delivery.targets import Resolver, default_resolve
from batchcalls.adapters.logs import quoted, redact_in, redact_url
from batchcalls.adapters.metrics import Metrics
from batchcalls.adapters.store import batches, outbox
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.tenants import webhook_secrets_for_batch
from batchcalls.domain.events import backoff_seconds
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


def lock_ms(settings: Settings) -> int:
    """How long a relay's lock, and its tenant's delivery lease, last between renewals."""
    return int((settings.webhook_timeout_seconds + LOCK_MARGIN_SECONDS) * 1000)


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
        self.poster = EventPoster(settings, http, resolve=resolve)
        self.leases = DeliveryLeases(
            client, limit=settings.webhook_tenant_concurrency, lease_seconds=lock_ms(settings) / 1000
        )

    def run(self, batch_id: str) -> Outcome:
        """Deliver what is due for one batch; safe to call any number of times at once."""
        lock_key, dirty_key = redis_keys.relay_lock(batch_id), redis_keys.relay_dirty(batch_id)
        held_ms = lock_ms(self.settings)
        self.redis.set(dirty_key, "1", px=held_ms * 4)
        total, retry_in = 0, None
        while True:
            # redis-py's Lock: a token of its own, renewed and released only while still ours
            # (compared and changed in one script; a GET then a DEL had deleted the lock of a
            # relay that took it over, see tests/integration/test_relay_concurrency.py).
            lock = self.redis.lock(lock_key, timeout=held_ms / 1000, thread_local=False)
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
                    error = self.poster.post(url, secrets, event["id"], event["payload"], deadline=deadline)
                    if error is None:
                        done.append(event["seq"])
                        delivered += 1
                        continue
                    retry_in = self._failed(batch_id, url, event, error)
                    if retry_in is not None:
                        return delivered, retry_in
            finally:
                # A relay that dies before this sends these events again: at least once.
                if done:
                    with self.db.transaction() as cur:
                        outbox.mark_delivered_many(cur, done)
                    if self.metrics is not None:
                        self.metrics.webhook(delivered=True, count=len(done))

    def _failed(self, batch_id: str, url: str, event: dict[str, Any], error: str) -> float | None:
        """Record a failed POST of `event` and when to try it again: seconds from now, or None
        when it is older than the retry window and given up (the next event goes on)."""
        if self.metrics is not None:
            self.metrics.webhook(delivered=False)
        age_hours = (datetime.now(UTC) - event["created_at"]).total_seconds() / 3600
        give_up = age_hours > self.settings.webhook_retry_hours
        retry_in = backoff_seconds(event["delivery_attempts"] + 1)
        with self.db.transaction() as cur:
            outbox.mark_failed(cur, event["seq"], error, retry_in, give_up=give_up)
        log.warning(
            "event delivery failed batch_id=%s event_id=%s url=%s error=%s retry_in=%s",
            batch_id,
            event["id"],
            quoted(redact_url(url)),
            quoted(redact_in(error, url)),
            "never" if give_up else f"{retry_in:.1f}",
        )
        return None if give_up else retry_in
