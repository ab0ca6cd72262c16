"""Redis gates: the per-batch ready queue and slot leases, and the provider's calls-per-second
log shared by the fleet. Redis holds only what can be rebuilt from Postgres (`load_batch`).

Every per-batch key carries the `{batch_id}` hash tag, so each script touches one cluster slot.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import redis
from redis.lock import Lock

from batchcalls.adapters import redis_keys
from batchcalls.adapters.scheduler import DialScheduler, _text

# A batch's state being written (`load_batch`) is marked for this long after each chunk: the
# reconciler leaves it alone meanwhile instead of taking it for lost.
LOADING_MS = 5000
PRIORITY_SHIFT = 2**32  # ready score = priority * 2**32 + seq: priority first, then submission order


def ready_score(priority: int, seq: int) -> int:
    return priority * PRIORITY_SHIFT + seq


def priority_of(score: float) -> int:
    return int(score) // PRIORITY_SHIFT


def _script(name: str) -> str:
    return resources.files("batchcalls.adapters").joinpath("lua", name).read_text()


@dataclass(frozen=True)
class Grant:
    """What one acquire did: the calls given a slot (with their ready score), the leases found
    expired (for the caller to check against Postgres), and when the next retry comes due."""

    missing: bool
    granted: list[tuple[str, float]]
    now: float  # Redis time of the grant, Unix seconds
    expired: list[str]
    next_due_in: float | None
    wants: int | None = None  # the priority of the next call when the batch could dial one more now
    tenant: str = ""


class Gates(DialScheduler):
    def __init__(self, client: redis.Redis, lease_seconds: float) -> None:
        self.redis = client
        self.lease_ms = int(lease_seconds * 1000)
        self._acquire = client.register_script(_script("acquire.lua"))
        self._renew = client.register_script(_script("renew.lua"))
        self._scheduler = client.register_script(_script("scheduler.lua"))

    def load_batch(
        self,
        batch_id: str,
        concurrency: int,
        ready: Iterable[tuple[str, int]],
        delayed: Iterable[tuple[str, int, float]] = (),
        leased: Iterable[str] = (),
        *,
        paused: bool = False,
        tenant: str = "",
        chunk: int = 5000,
    ) -> None:
        """Write a batch's state: `ready` (call id, score), `delayed` (call id, score, due Unix
        seconds), `leased` call ids. The meta hash is written last, so a half-written state is
        never taken for a whole one; until then the batch is marked `loading` (see `loading`)."""
        meta, ready_key, delayed_key, leases_key = redis_keys.gate_keys(batch_id)
        loading = redis_keys.batch_loading(batch_id)
        self.redis.set(loading, "1", px=LOADING_MS)  # at once: the batch is in Postgres already
        pipe = self.redis.pipeline(transaction=False)
        # Many members per ZADD: one command per member was a tenth of a 100,000-call submit.
        members: dict[str, int] = {}
        for call_id, score in ready:
            members[call_id] = score
            if len(members) >= chunk:
                pipe.zadd(ready_key, members)
                pipe.pexpire(loading, LOADING_MS)
                pipe.execute()
                members = {}
        if members:
            pipe.zadd(ready_key, members)
        for call_id, score, due in delayed:
            pipe.zadd(delayed_key, {f"{score}|{call_id}": int(due * 1000)})
        now_ms = int(self.redis.time()[0] * 1000)
        for call_id in leased:
            pipe.zadd(leases_key, {call_id: now_ms + self.lease_ms}, nx=True)
        pipe.hset(meta, mapping={"concurrency": concurrency, "paused": "1" if paused else "0", "tenant": tenant})
        pipe.delete(loading)
        pipe.execute()

    def ping(self) -> None:
        """Raises `RedisError` when Redis cannot be reached."""
        self.redis.ping()

    def claim_wake(self, batch_id: str, target: float, countdown: float) -> bool:
        """Mark the batch's next wake-up for `target` (Unix seconds, `countdown` from now); False
        when one is marked already for no later than that, so a wake-up is sent once."""
        key = redis_keys.batch_wake(batch_id)
        current = self.redis.get(key)
        if current is not None and time.time() < float(current) <= target + 0.05:
            return False
        self.redis.set(key, f"{target:.3f}", px=int((countdown + 5) * 1000))
        return True

    def rebuild_lock(self, batch_id: str, timeout: float) -> Lock:
        """Held while the batch's state is written again from Postgres, by one process at a time."""
        lock: Lock = self.redis.lock(redis_keys.batch_rebuild_lock(batch_id), timeout=timeout)
        return lock

    def reconcile_lock(self, timeout: float) -> Lock:
        """Held by the one reconciler sweep running in the fleet."""
        lock: Lock = self.redis.lock(redis_keys.RECONCILE_LOCK, timeout=timeout)
        return lock

    def loading(self, batch_id: str) -> bool:
        """True while a `load_batch` of the batch is under way, and up to LOADING_MS after one
        stopped half-way (its process died): a 100,000-call batch takes seconds to write."""
        return bool(self.redis.exists(redis_keys.batch_loading(batch_id)))

    def exists(self, batch_id: str) -> bool:
        # `concurrency`, not the key: `set_paused` on a lost state leaves a meta hash without it.
        return bool(self.redis.hexists(redis_keys.batch_meta(batch_id), "concurrency"))

    def acquire(
        self,
        batch_id: str,
        release: Iterable[str] = (),
        delay: Iterable[tuple[str, int, float]] = (),
        *,
        at_most: int | None = None,
    ) -> Grant:
        """Release `release` leases, park `delay` calls (call id, score, due Unix seconds) until
        due, then lease free slots to the best ready calls (`at_most` of them)."""
        release = list(release)
        delay = list(delay)
        limit = -1 if at_most is None else at_most
        args: list[str | int | float] = [self.lease_ms, limit, len(release), *release, len(delay)]
        for call_id, score, due in delay:
            args += [int(due * 1000), f"{score}|{call_id}"]
        result = self._acquire(keys=redis_keys.gate_keys(batch_id), args=args)
        if result[0] == -1:
            return Grant(True, [], 0.0, [], None)
        now_ms, next_due, flat, expired, wants, tenant = result
        granted = [(_text(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
        return Grant(
            False,
            granted,
            int(now_ms) / 1000,
            [_text(e) for e in expired],
            None if int(next_due) < 0 else int(next_due) / 1000,
            None if int(wants) < 0 else int(wants),
            _text(tenant),
        )

    def renew(self, batch_id: str, call_ids: Iterable[str], extra_seconds: float = 0) -> int:
        """Renew existing leases; returns how many exist. A call without a lease must not dial."""
        ids = list(call_ids)
        if not ids:
            return 0
        key = redis_keys.batch_leases(batch_id)
        return int(self._renew(keys=[key], args=[self.lease_ms + int(extra_seconds * 1000), *ids]))

    def release(self, batch_id: str, call_ids: Iterable[str]) -> None:
        ids = list(call_ids)
        if ids:
            self.redis.zrem(redis_keys.batch_leases(batch_id), *ids)

    def set_paused(self, batch_id: str, *, paused: bool) -> None:
        self.redis.hset(redis_keys.batch_meta(batch_id), "paused", "1" if paused else "0")

    def leases(self, batch_id: str) -> list[str]:
        return [_text(m) for m in self.redis.zrange(redis_keys.batch_leases(batch_id), 0, -1)]

    def forget(self, batch_id: str) -> None:
        self.redis.delete(*redis_keys.gate_keys(batch_id))

    def drop_waiting(self, batch_id: str) -> None:
        """Empty the batch's ready and delayed queues; its slots stay leased to its live calls."""
        self.redis.delete(redis_keys.batch_ready(batch_id), redis_keys.batch_delayed(batch_id))

    def depth(self, batch_id: str) -> tuple[int, int, int]:
        """(ready, delayed, leased) counts."""
        _, ready, delayed, leases = redis_keys.gate_keys(batch_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(ready)
        pipe.zcard(delayed)
        pipe.zcard(leases)
        r, d, x = pipe.execute()
        return int(r), int(d), int(x)
