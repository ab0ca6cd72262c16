"""Bearer API keys: each request's key names its tenant, within the request budgets."""

from __future__ import annotations

from flask import g, request

from api.ratelimit import RequestLimits, client_subject
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.tenants import Tenant, tenant_for_key
from batchcalls.domain.errors import RateLimited, Unauthorized


def bearer_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def authenticate(db: Database, budgets: RequestLimits) -> Tenant:
    """The request's tenant, or `Unauthorized`; `RateLimited` when the client address has failed
    authentication too often or the tenant has spent its budget. `g.rate_limit` is the standing
    the answer advertises.

    The failed-authentication budget is reserved before the key is looked up, in one atomic
    Redis step (`spend`: the moving window's Lua script checks and counts together), and the
    key is looked up only when that reservation succeeded. So at most the budget's worth of
    lookups run per window and address however many requests are in flight at once; a
    separate check then count would let every request in flight through while one slot is
    free. A key found valid gets its reservation back (`refund`), so valid keys never spend the
    budget; while its lookup runs it holds a slot, so an address whose budget is spent is
    refused even with a valid key.
    """
    address = client_subject(request.remote_addr)
    # Only the count on the way in: what is left of the budget is read only for an answer that
    # shows it (a refusal or a failure), not for every valid key.
    reserved = budgets.reserve(budgets.failed_auth, address)
    if reserved is False:
        g.rate_limit = standing = budgets.standing(budgets.failed_auth, address, allowed=False)
        retry_after = standing.retry_after if standing is not None else 1
        raise RateLimited(
            f"too many requests with a missing or invalid API key from this address; retry in {retry_after} s",
            retry_after,
        )
    key = bearer_key()
    tenant = tenant_for_key(db, key) if key else None
    if tenant is None:
        g.rate_limit = None if reserved is None else budgets.standing(budgets.failed_auth, address, allowed=True)
        raise Unauthorized("missing or invalid API key: send `Authorization: Bearer <api key>`")
    if reserved is not None:
        budgets.refund(budgets.failed_auth, address)
    g.tenant = tenant
    standing = budgets.spend(budgets.tenant, str(tenant.id))
    g.rate_limit = standing
    if standing is not None and not standing.allowed:
        raise RateLimited(
            f"too many requests for this account (at most {standing.policy.item}); retry in {standing.retry_after} s",
            standing.retry_after,
        )
    return tenant
