"""The name of every Redis key the product writes, built here and nowhere else.

A fleet being upgraded runs old and new code against the same Redis, so a key's form never
changes: `tests/unit/test_redis_keys.py` pins each one. Every key of one batch carries the
`{batch_id}` hash tag and the event inbox's keys of one shard carry `{events-<shard>}`, so that
a Lua script or a pipeline touching them stays within one Redis Cluster slot.

Not here, because their names are another library's: Celery's broker lists (the queue names of
`batchcalls.adapters.queues`) and the rate limiter's windows (the `limits` package builds those keys from
the policy names of `api.ratelimit`).
"""

from __future__ import annotations

import hashlib

PREFIX = "bc"

# Fleet-wide metrics: one hash of counters, and a capped list of dispatch-latency samples.
METRICS = f"{PREFIX}:metrics"
METRICS_LATENCY_SAMPLES = f"{PREFIX}:metrics:dispatch_latency_samples"
# Held by the one reconciler sweep running in the fleet.
RECONCILE_LOCK = f"{PREFIX}:reconcile-lock"
# The secret that signs the dashboard's session cookies when BATCHCALLS_DASHBOARD_SECRET is unset.
DASHBOARD_SECRET = f"{PREFIX}:dashboard-secret"


def _batch(batch_id: str, name: str) -> str:
    return f"{PREFIX}:{{{batch_id}}}:{name}"


def batch_meta(batch_id: str) -> str:
    """Hash: the batch's concurrency and whether it is paused."""
    return _batch(batch_id, "meta")


def batch_ready(batch_id: str) -> str:
    """Sorted set: calls waiting for a slot, by priority then submission order."""
    return _batch(batch_id, "ready")


def batch_delayed(batch_id: str) -> str:
    """Sorted set: retries waiting to come due."""
    return _batch(batch_id, "delayed")


def batch_leases(batch_id: str) -> str:
    """Sorted set: calls holding a slot, scored by when the lease runs out."""
    return _batch(batch_id, "leases")


def gate_keys(batch_id: str) -> list[str]:
    """The batch's gate keys in the order `lua/acquire.lua` takes them as KEYS[1..4]."""
    return [batch_meta(batch_id), batch_ready(batch_id), batch_delayed(batch_id), batch_leases(batch_id)]


def batch_loading(batch_id: str) -> str:
    """Marks a batch whose gate state is being written."""
    return _batch(batch_id, "loading")


def batch_wake(batch_id: str) -> str:
    """When the batch's next wake-up task is due (one at a time per batch)."""
    return _batch(batch_id, "wake")


def batch_rebuild_lock(batch_id: str) -> str:
    return _batch(batch_id, "rebuild")


def relay_lock(batch_id: str) -> str:
    """Held by the one relay delivering the batch's events."""
    return _batch(batch_id, "relay")


def relay_dirty(batch_id: str) -> str:
    """Marks a batch with events the running relay may not have seen."""
    return _batch(batch_id, "relay-dirty")


def relay_queued(batch_id: str) -> str:
    """Marks a batch with a `deliver` task queued and not yet started."""
    return _batch(batch_id, "relay-queued")


def relay_retry(batch_id: str) -> str:
    """Marks a batch with a `deliver` retry scheduled (one chain of retries per batch)."""
    return _batch(batch_id, "relay-retry")


def relay_keys(batch_id: str) -> tuple[str, str, str, str]:
    """The relay's lock, dirty mark, queued-task mark and scheduled-retry mark, in the order the
    kick script takes them."""
    return relay_lock(batch_id), relay_dirty(batch_id), relay_queued(batch_id), relay_retry(batch_id)


def cps_log(account: str) -> str:
    """Sorted set: the provider calls created lately under one provider account, fleet-wide."""
    return f"{PREFIX}:cps:{{{account}}}"


def scheduler_keys(account: str) -> list[str]:
    """The dial scheduler's key prefix, the account's creation log and the pacer's mark, in the
    order `lua/scheduler.lua` takes them. One hash tag with the creation log: one cluster slot.
    Under the prefix: `:prios`, `:p:<priority>` (tenants), `:p:<priority>:t:<tenant>`
    (batches), `:where`, `:clock`, `:seq`, `:parked`, `:parked-vt`, `:limits`, `:live:<tenant>`
    (see `scheduler_live`), `:log:<tenant>` (a tenant's own creation log)."""
    return [f"{cps_log(account)}:sched", cps_log(account), f"{cps_log(account)}:pacer"]


def scheduler_live(account: str, tenant: str) -> str:
    """Sorted set: a tenant's calls holding a slot, counted under its concurrent-calls ceiling."""
    return f"{cps_log(account)}:sched:live:{tenant}"


def tenant_delivery_leases(tenant_id: int) -> str:
    """Sorted set: the deliveries a tenant has running, fleet-wide. Both keys of a tenant carry
    one hash tag: the lease script touches one cluster slot."""
    return f"{PREFIX}:{{tenant-deliveries:{tenant_id}}}"


def tenant_delivery_next(tenant_id: int) -> str:
    """The tenant's batch next in line for a delivery lease."""
    return f"{tenant_delivery_leases(tenant_id)}:next"


def event_stream(shard: int) -> str:
    """Stream: provider events of one inbox shard, waiting to be applied."""
    return f"{PREFIX}:{{events-{shard}}}:stream"


def event_drain_flag(shard: int) -> str:
    """Marks an inbox shard with a drain task on its way."""
    return f"{PREFIX}:{{events-{shard}}}:drain"


def vonage_replay(jti: str) -> str:
    """Marks a signed Vonage webhook's token as taken. The token id is hashed: it comes from the
    request, and a key's length must not be the sender's choice."""
    return f"{PREFIX}:vonage-jti:" + hashlib.sha256(jti.encode()).hexdigest()[:40]
