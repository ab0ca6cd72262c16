"""Granting slots: release ended calls' slots, park retries, give free slots to the next calls
(one `place_call` task each, or a few calls per task), and rebuild a batch's Redis state from
Postgres when it was lost."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time

from redis.exceptions import LockError

from batchcalls.adapters import gates as gates_mod
from batchcalls.adapters.store import batches, calls
from batchcalls.domain.states import ACTIVE_BATCH_STATUSES, DIALING_BATCH_STATUSES, LIVE_STATUSES, CallStatus
from batchcalls.engine.base import EngineParts

log = logging.getLogger("batchcalls.engine")

# Provider events are applied at the message priority of a call of the default priority (5, of
# 0..9, 0 first). An event task places the next call itself only when that call has the same
# priority: a call of a higher priority goes out as a `place_call` task that jumps the queue, one
# of a lower priority as one that waits behind it. Placed at any other priority, a batch's calls
# would chain from event to event outside their priority: a chain above the default level ran
# for as long as its batches did, and starved the dispatch of new batches and the reconciler.
EVENT_PRIORITY = 5
# A grant of many slots at once is sent as `place_calls` tasks of up to PLACE_CHUNK_MAX calls,
# and at least PLACE_SPREAD tasks (a grant of fewer than 2 * PLACE_SPREAD calls: one per call).
PLACE_CHUNK_MAX = 20
PLACE_SPREAD = 8


class Granting(EngineParts):
    def dispatch(
        self,
        batch_id: str,
        release: list[str] | None = None,
        delay: list[tuple[str, int, float]] | None = None,
        *,
        place_here: bool = False,
    ) -> int:
        """Release ended calls' slots, park retries, and send one `place_call` per free slot.
        With `place_here` (a provider event freed the slot) the first granted call is placed in
        this task instead, after the rest are sent: the slot goes to its next call without a
        trip through the broker and the queue. Returns how many calls were given a slot."""
        return self._dispatch(batch_id, release, delay, place_here=place_here)[0]

    def _dispatch(
        self,
        batch_id: str,
        release: list[str] | None,
        delay: list[tuple[str, int, float]] | None,
        *,
        place_here: bool,
    ) -> tuple[int, str | None]:
        """`dispatch`, and the call it placed here (if any)."""
        # Under a calls-per-second limit a slot is given at the call's creation turn (`pacing`).
        at_most = 0 if self.settings.cps_limit else None
        grant = self.gates.acquire(batch_id, release or (), delay or (), at_most=at_most)
        if grant.missing:
            if not self.rebuild(batch_id):
                return 0, None
            grant = self.gates.acquire(batch_id, at_most=at_most)
            if grant.missing:
                return 0, None
        if at_most == 0:
            self._join(batch_id, grant, release or [])
        here = None
        if place_here and grant.granted and gates_mod.priority_of(grant.granted[0][1]) == EVENT_PRIORITY:
            here = grant.granted[0][0]
        freed = bool(release)  # these slots were freed by calls that ended, not a batch's start
        self._send_placements(batch_id, grant.granted[1:] if here else grant.granted, grant.now, freed=freed)
        if grant.expired:
            self._check_expired(batch_id, grant.expired)
        if grant.next_due_in is not None:
            self._schedule_wake(batch_id, grant.next_due_in)
        if here is not None:
            self.place_call(here, granted_at=grant.now, batch_id=batch_id, freed=True)
        return len(grant.granted), here

    def _send_placements(
        self, batch_id: str, granted: list[tuple[str, float]], granted_at: float, *, freed: bool = False
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
        if self.gates.claim_wake(batch_id, time.time() + countdown, countdown):
            self.tasks.wake(batch_id, countdown)

    def rebuild(self, batch_id: str) -> bool:
        """Write a batch's Redis state again from Postgres. False when the batch is not active."""
        lock = self.gates.rebuild_lock(batch_id, timeout=30)
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
                batch_id,
                batch["concurrency"],
                ready,
                delayed,
                live,
                paused=batch["status"] not in DIALING_BATCH_STATUSES,  # paused, or scheduled
                tenant=str(batch["tenant_id"]),
            )
            return True
        finally:
            with contextlib.suppress(LockError):
                lock.release()  # only while still ours: a rebuild past 30 s leaves the next one's alone
