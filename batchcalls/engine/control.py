"""Control of a batch: pause, resume, cancel (with the hangup of its live calls), its start at
`start_at`, and its expiry.

Postgres decides and records each command under the batch's row lock; Redis follows: a paused
batch's gate grants no slot, a resumed one is dispatched again (under a calls-per-second limit it
registers with the dial scheduler again through `dispatch`), and a cancelled one's gate state is
dropped, so none of its waiting calls costs a task. A call given a slot before the command is
refused by the attempt's start, which reads the batch's status under its share lock. A
scheduled batch's gate is closed as a paused one's is, until its start opens it.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from batchcalls.adapters.logs import quoted
from batchcalls.adapters.store import control
from batchcalls.domain.commands import Command
from batchcalls.domain.errors import ProviderError, Unavailable
from batchcalls.domain.states import DIALING_BATCH_STATUSES, BatchStatus
from batchcalls.engine.base import EngineParts

log = logging.getLogger("batchcalls.engine")

# A live call whose create has not returned yet has no provider id to hang up: its hangup is
# tried again this often, this many times (a create answers within its timeout).
HANGUP_RETRY_SECONDS = 1.0
HANGUP_TRIES = 30
CONTROL_RETRY_AFTER = 5


class Controlling(EngineParts):
    def command(self, tenant_id: int, batch_id: str, command: Command, *, hang_up: bool = False) -> dict[str, Any]:
        """Apply a command to the tenant's batch and bring Redis in line; returns the batch row.
        Idempotent: a repeated command changes nothing in Postgres and does its Redis part
        again (a retry after `Unavailable` completes it)."""
        with self.db.transaction() as cur:
            done = control.command_batch(cur, tenant_id, batch_id, command, hang_up=hang_up)
        batch = done.batch
        status = BatchStatus(batch["status"])
        try:
            if status is BatchStatus.PAUSED:
                self.gates.set_paused(batch_id, paused=True)
            elif status is BatchStatus.CANCELLED:
                self.gates.forget(batch_id)
            elif command is Command.RESUME and status in DIALING_BATCH_STATUSES:
                self.gates.set_paused(batch_id, paused=False)
        except RedisError as exc:
            log.warning("batch command stored, Redis not updated batch_id=%s error=%s", batch_id, quoted(exc))
            raise Unavailable(
                f"the batch was {status.value} but its queue could not be updated; repeat the request",
                CONTROL_RETRY_AFTER,
            ) from exc
        if command is Command.RESUME and status in DIALING_BATCH_STATUSES:
            self.tasks.dispatch(batch_id, batch["priority"])
        for call_id in done.hang_up:
            self.tasks.hang_up(batch_id, call_id)
        if done.events and batch["callback_url"]:
            self.kick_delivery(batch_id, urgent=True)
        log.info(
            "batch command batch_id=%s command=%s status=%s ended=%d hang_up=%d",
            batch_id,
            command.value,
            status.value,
            done.ended,
            len(done.hang_up),
        )
        return batch

    def expire(self, batch_id: str) -> int:
        """End the waiting calls of a batch whose `expires_at` has passed as `expired` (one
        statement, no task per call) and empty its Redis queues; its live calls finish. A no-op
        for a batch not yet expired or finished; repeatable. Returns how many calls it ended."""
        with self.db.transaction() as cur:
            done = control.expire_batch(cur, batch_id)
        if done is None:
            return 0
        self.gates.drop_waiting(batch_id)
        if done.events and done.batch["callback_url"]:
            self.kick_delivery(batch_id, urgent=True)
        if done.ended:
            log.info("batch expired batch_id=%s ended=%d", batch_id, done.ended)
        return done.ended

    def start(self, batch_id: str) -> bool:
        """Start a scheduled batch whose `start_at` has come: `queued` in Postgres, its gate in
        Redis opened, and a dispatch. The gate is opened before the start commits, under the
        batch's row lock, so a pause or cancel after it closes the gate after this opened it;
        should Redis fail, nothing is committed and the task (or the sweep) starts it again.
        A no-op for a batch whose `start_at` is ahead or that has finished; repeatable (a
        started batch's gate is opened again). True when the batch is dialing."""
        with self.db.transaction() as cur:
            done = control.start_batch(cur, batch_id)
            if done is None or done.batch["status"] not in DIALING_BATCH_STATUSES:
                return False
            self.gates.set_paused(batch_id, paused=False)
        self.tasks.dispatch(batch_id, done.batch["priority"])
        log.info("batch started batch_id=%s", batch_id)
        return True

    def hang_up(self, batch_id: str, call_id: str, tries: int = 0) -> bool:
        """End a live call of a cancelled batch as `cancelled`, then hang it up through the
        provider. True when the provider was asked."""
        assert self.provider is not None
        with self.db.transaction() as cur:
            attempt, batch = control.hang_up_call(cur, call_id)
        if batch is not None and batch["callback_url"]:
            self.kick_delivery(batch_id, urgent=batch["finished_at"] is not None)
        if attempt is None:
            return False
        if attempt["provider_call_id"] is None:
            if tries < HANGUP_TRIES:
                self.tasks.hang_up(batch_id, call_id, tries=tries + 1, countdown=HANGUP_RETRY_SECONDS)
            return False
        try:
            self.provider.hangup(call_id, attempt["number"], attempt["provider_call_id"])
        except ProviderError as exc:
            log.warning(
                "hangup refused, the call ends on its own batch_id=%s call_id=%s error=%s",
                batch_id,
                call_id,
                quoted(exc),
            )
            return False
        log.info("hung up batch_id=%s call_id=%s attempt=%d", batch_id, call_id, attempt["number"])
        return True
