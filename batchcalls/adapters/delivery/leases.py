"""At most a few deliveries at once per tenant, fleet-wide: a tenant whose receiver is slow ties
up that many delivery processes, not the fleet's.

A delivery holds a lease in its tenant's sorted set (member: the relay's lock token, score: when
the lease runs out, on Redis's clock). A lease is renewed as the relay lock is, and given back
when the relay lets go; a worker killed mid-delivery holds its share only until the lease runs
out, like the relay lock.
"""

from __future__ import annotations

import redis

from batchcalls.adapters import redis_keys

# The first batch refused a lease becomes its tenant's next in line: while it is, a lease that
# comes free is kept for it (other batches take one only if two or more are free), so a batch
# that waits gets the next free share, not a batch that just gave one back and came back sooner.
# The mark lasts about twice the waiting batch's retry interval: a waiter that goes away holds
# its place only that long.
NEXT_IN_LINE_MS = 4000

# Drops the tenant's leases that ran out, then renews ours, or takes a new one if there is room
# that is not kept for the next in line. KEYS[1] the tenant's leases, KEYS[2] its next in line;
# ARGV: token, limit, lease ms, who asks (a batch), next-in-line ms. Returns 1 when the lease is ours.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease_ms)
  return 1
end
local next_in_line = redis.call('GET', KEYS[2])
local kept = 0
if next_in_line and next_in_line ~= ARGV[4] then
  kept = 1
end
if redis.call('ZCARD', KEYS[1]) + kept < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease_ms)
  if next_in_line == ARGV[4] then
    redis.call('DEL', KEYS[2])
  end
  return 1
end
if not next_in_line or next_in_line == ARGV[4] then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
end
return 0
"""


class DeliveryLeases:
    def __init__(self, client: redis.Redis, *, limit: int, lease_seconds: float) -> None:
        self.redis = client
        self.limit = limit
        self.lease_ms = int(lease_seconds * 1000)
        self._take = client.register_script(_TAKE)

    def take(self, tenant_id: int, token: str, *, waiter: str | None = None) -> bool:
        """Take a lease for `token`, or renew the one it holds; False when the tenant already
        has `limit` deliveries running (and `token` is not one of them), or the one free is kept
        for another `waiter` (a batch; `token` when not given) refused before this one."""
        keys = [redis_keys.tenant_delivery_leases(tenant_id), redis_keys.tenant_delivery_next(tenant_id)]
        return bool(self._take(keys=keys, args=[token, self.limit, self.lease_ms, waiter or token, NEXT_IN_LINE_MS]))

    def give_back(self, tenant_id: int, token: str) -> None:
        self.redis.zrem(redis_keys.tenant_delivery_leases(tenant_id), token)

    def held(self, tenant_id: int) -> int:
        """How many leases the tenant holds (expired ones included until the next take)."""
        return int(self.redis.zcard(redis_keys.tenant_delivery_leases(tenant_id)))
