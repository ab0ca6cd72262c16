"""Delivery kicks: the Redis marks that decide when a batch needs a `deliver` task, so that a
batch ending a call every millisecond has one relay running, not one task per event, and one
chain of scheduled retries, however many tasks found it waiting."""

from __future__ import annotations

import redis

from batchcalls.adapters import redis_keys
from batchcalls.adapters.delivery.relay import lock_ms
from config.settings import Settings

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


class Kicks:
    """Coalesces delivery kicks: a batch that ends a call every millisecond needs one relay
    running, not one `deliver` task per event."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.redis = client
        self.lock_ms = lock_ms(settings)
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
