"""Submitting a batch: store it and its calls, queue them in Redis, and wake the dispatcher (or,
for a batch whose `start_at` is ahead, arm the one wake-up that starts it then)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from batchcalls.adapters import gates as gates_mod
from batchcalls.adapters.logs import quoted
from batchcalls.adapters.store import batches, calls
from batchcalls.adapters.store.tenants import Tenant
from batchcalls.domain.errors import Unavailable
from batchcalls.domain.models import NewBatch
from batchcalls.domain.states import BatchStatus, batch_initial_status
from batchcalls.domain.window_requests import openings
from batchcalls.engine.base import EngineParts

log = logging.getLogger("batchcalls.engine")

# What a batch refused for want of Redis tells its client to wait before trying again (seconds).
SUBMIT_RETRY_AFTER = 5


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Submitting(EngineParts):
    def replay(self, tenant: Tenant, idempotency_key: str, body: Any) -> str | None:
        """The batch an earlier request with this key and body created, looked up before the body
        is checked: a replay is answered as the first request was, though the body would be
        refused now (its `expires_at` has passed since). Raises IdempotencyConflict for another body."""
        with self.db.transaction() as cur:
            return batches.replay_of(cur, tenant.id, idempotency_key, request_hash(body))

    def replay_digest(self, tenant: Tenant, idempotency_key: str, digest: str) -> str | None:
        """`replay` for a request whose hash the caller made (a streamed upload)."""
        with self.db.transaction() as cur:
            return batches.replay_of(cur, tenant.id, idempotency_key, digest)

    def submit(
        self,
        tenant: Tenant,
        batch: NewBatch,
        idempotency_key: str | None,
        body: Any,
        *,
        chunks: Iterable[NewBatch] | None = None,
        digest: str | None = None,
    ) -> tuple[str, bool]:
        """Store the batch and its calls in one transaction, queue them in Redis, and wake the
        dispatcher. Returns (batch id, created). A batch whose `start_at` is ahead is stored
        `scheduled` and queued behind a closed gate, not dispatched: one wake-up at `start_at`
        (or the reconciler's sweep) starts it. A streamed upload gives its calls as `chunks`
        (each a NewBatch of some of them with the batch's options) and its request's `digest`:
        they are stored as they come, and read back from Postgres to be queued, so memory does not
        grow with the batch.

        Raises `Unavailable`, with nothing stored, when Redis cannot be reached before the
        batch is stored. Once it is stored it stands: should Redis fail after that, the
        reconciler queues it (as it does a batch whose API process died there), so the batch is
        accepted all the same rather than refused, which a client would retry into a second batch."""
        try:
            self.gates.ping()
        except RedisError as exc:
            log.warning("batch refused, Redis unavailable error=%s", quoted(exc))
            raise Unavailable(
                "the service cannot queue calls right now (Redis is unavailable); nothing was stored, retry later",
                SUBMIT_RETRY_AFTER,
            ) from exc
        now = datetime.now(UTC)
        status = batch_initial_status(batch.start_at, now)
        begins, offset = max(now, batch.start_at or now), self.settings.clock_offset
        submitted = batches.insert_batch(
            self.db,
            tenant.id,
            batch,
            idempotency_key=idempotency_key,
            request_hash=digest or request_hash(body),
            max_queued_calls=self.settings.max_queued_calls,
            tenant_max_queued_calls=self.settings.tenant_max_queued_calls,
            openings=openings(batch, begins, offset),
            status=status,
            chunks=None if chunks is None else ((part, openings(part, begins, offset)) for part in chunks),
        )
        waiting = submitted.calls if chunks is None else None
        if submitted.finished:  # every call was suppressed or skipped: nothing to queue, the batch ended
            if batch.callback_url:
                self.kick_delivery(submitted.batch_id, urgent=True)
        elif submitted.created:
            try:
                ready = (
                    waiting if waiting is not None else calls.queued_calls(self.db, submitted.batch_id, delayed=False)
                )
                later = (
                    waiting if waiting is not None else calls.queued_calls(self.db, submitted.batch_id, delayed=True)
                )
                self.gates.load_batch(
                    submitted.batch_id,
                    batch.concurrency,
                    ((cid, gates_mod.ready_score(prio, seq)) for cid, seq, prio, at in ready if at is None),
                    ((cid, gates_mod.ready_score(prio, seq), at.timestamp()) for cid, seq, prio, at in later if at),
                    paused=status is BatchStatus.SCHEDULED,
                    tenant=str(tenant.id),
                )
                if self.settings.cps_limit:
                    policy = tenant.policy.over(self.settings.tenant_defaults)
                    self.gates.set_tenant_limits(
                        self.settings.provider_account,
                        str(tenant.id),
                        policy.max_calls_per_second,
                        policy.max_concurrent_calls,
                    )
                if status is BatchStatus.SCHEDULED:
                    self._arm_start(submitted.batch_id, batch)
                else:
                    self.tasks.dispatch(submitted.batch_id, batch.priority)
                self._arm_expiry(submitted.batch_id, batch)
            except Exception as exc:  # noqa: BLE001 - Redis or the broker; the batch is stored either way
                log.warning(
                    "batch stored but not queued, the reconciler will queue it batch_id=%s error=%s",
                    submitted.batch_id,
                    quoted(f"{type(exc).__name__}: {exc}"),
                )
        return submitted.batch_id, submitted.created

    def _arm_expiry(self, batch_id: str, batch: NewBatch) -> None:
        """One wake-up at the batch's `expires_at` when that is near; a later one is armed by the
        reconciler's sweep as it comes near (a countdown stays short of the broker's visibility
        timeout), which also expires a due batch whose wake-up was lost."""
        if batch.expires_at is None:
            return
        due_in = batch.expires_at.timestamp() - time.time()
        if due_in <= self.settings.max_countdown_seconds:
            self.tasks.expire(batch_id, countdown=max(due_in, 0))

    def _arm_start(self, batch_id: str, batch: NewBatch) -> None:
        """One wake-up at the batch's `start_at` when that is near; a later one is armed by the
        reconciler's sweep as it comes near, which also starts a due batch whose wake-up was lost."""
        assert batch.start_at is not None
        due_in = batch.start_at.timestamp() - time.time()
        if due_in <= self.settings.max_countdown_seconds:
            self.tasks.start(batch_id, countdown=max(due_in, 0))
