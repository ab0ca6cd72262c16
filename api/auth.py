"""Bearer API keys: each request's key names its tenant."""

from __future__ import annotations

from flask import g, request

from batchcalls.errors import Unauthorized
from batchcalls.store.db import Database
from batchcalls.store.tenants import Tenant, tenant_for_key


def bearer_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def authenticate(db: Database) -> Tenant:
    key = bearer_key()
    tenant = tenant_for_key(db, key) if key else None
    if tenant is None:
        raise Unauthorized("missing or invalid API key: send `Authorization: Bearer <api key>`")
    g.tenant = tenant
    return tenant
