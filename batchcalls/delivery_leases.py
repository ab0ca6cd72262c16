"""At most a few deliveries at once per tenant, fleet-wide: a tenant whose receiver is slow ties
up that many delivery processes, not the fleet's.

A delivery holds a lease in its tenant's sorted set (member: the relay's lock token, score: when
the lease runs out, on Redis's clock). A lease is renewed as the relay lock is, and given back
when the relay lets go; a worker killed mid-delivery holds its share only until the lease runs
out, like the relay lock.
"""

from __future__ import annotations

import redis

from batchcalls import redis_keys

# Drops the tenant's leases that ran out, then renews ours, or takes a new one if there is room.
# KEYS[1] the tenant's leases; ARGV: token, limit, lease ms. Returns 1 when the lease is ours.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease_ms)
  return 1
end
return 0
"""


class DeliveryLeases:
    def __init__(self, client: redis.Redis, *, limit: int, lease_seconds: float) -> None:
        self.redis = client
        self.limit = limit
        self.lease_ms = int(lease_seconds * 1000)
        self._take = client.register_script(_TAKE)

    def take(self, tenant_id: int, token: str) -> bool:
        """Take a lease for `token`, or renew the one it holds; False when the tenant already
        has `limit` deliveries running (and `token` is not one of them)."""
        key = redis_keys.tenant_delivery_leases(tenant_id)
        return bool(self._take(keys=[key], args=[token, self.limit, self.lease_ms]))

    def give_back(self, tenant_id: int, token: str) -> None:
        self.redis.zrem(redis_keys.tenant_delivery_leases(tenant_id), token)

    def held(self, tenant_id: int) -> int:
        """How many leases the tenant holds (expired ones included until the next take)."""
        return int(self.redis.zcard(redis_keys.tenant_delivery_leases(tenant_id)))
