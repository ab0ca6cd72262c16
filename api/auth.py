"""Bearer API keys: each request's key names its tenant, within the request budgets."""

from __future__ import annotations

from flask import g, request

from api.ratelimit import RequestLimits
from batchcalls.errors import RateLimited, Unauthorized
from batchcalls.store.db import Database
from batchcalls.store.tenants import Tenant, tenant_for_key


def bearer_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def authenticate(db: Database, budgets: RequestLimits) -> Tenant:
    """The request's tenant, or `Unauthorized`; `RateLimited` when the client address has failed
    authentication too often (checked before the key is looked up) or the tenant has spent its
    budget. `g.rate_limit` is the standing the answer advertises."""
    address = request.remote_addr or "unknown"
    standing = budgets.peek(budgets.failed_auth, address)
    if standing is not None and not standing.allowed:
        g.rate_limit = standing
        raise RateLimited("too many requests with a missing or invalid API key from this address;"
                          f" retry in {standing.retry_after} s", standing.retry_after)
    key = bearer_key()
    tenant = tenant_for_key(db, key) if key else None
    if tenant is None:
        g.rate_limit = budgets.spend(budgets.failed_auth, address)
        raise Unauthorized("missing or invalid API key: send `Authorization: Bearer <api key>`")
    g.tenant = tenant
    standing = budgets.spend(budgets.tenant, str(tenant.id))
    g.rate_limit = standing
    if standing is not None and not standing.allowed:
        raise RateLimited(f"too many requests for this account (at most {standing.policy.item});"
                          f" retry in {standing.retry_after} s", standing.retry_after)
    return tenant
