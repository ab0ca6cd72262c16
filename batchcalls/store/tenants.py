"""Tenants and their API keys. Keys are stored as SHA-256 hashes; the key itself is shown once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from batchcalls.signing import new_webhook_secret
from batchcalls.store.db import Cursor, Database, execute

KEY_PREFIX = "bc_live_"


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    webhook_secrets: tuple[str, ...]


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_key(db: Database, tenant_name: str) -> tuple[Tenant, str]:
    """Create the tenant if new, and a new API key for it. Returns the tenant and the plain key."""
    api_key = KEY_PREFIX + secrets.token_urlsafe(30)
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO tenants (name, webhook_secrets) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
            " RETURNING id, name, webhook_secrets",
            (tenant_name, [new_webhook_secret()]),
        )
        row = cur.fetchone()
        cur.execute(
            "INSERT INTO api_keys (tenant_id, key_hash, prefix) VALUES (%s, %s, %s)",
            (row["id"], hash_key(api_key), api_key[: len(KEY_PREFIX) + 6]),
        )
    return Tenant(row["id"], row["name"], tuple(row["webhook_secrets"])), api_key


def tenant_for_key(db: Database, api_key: str) -> Tenant | None:
    with db.transaction() as cur:
        execute(
            cur, "SELECT t.id, t.name, t.webhook_secrets FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
            " WHERE k.key_hash = %s AND k.revoked_at IS NULL",
            (hash_key(api_key),),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return Tenant(row["id"], row["name"], tuple(row["webhook_secrets"]))


def webhook_secrets_for_batch(cur: Cursor, batch_id: str) -> tuple[str, ...]:
    execute(
        cur, "SELECT t.webhook_secrets FROM batches b JOIN tenants t ON t.id = b.tenant_id WHERE b.id = %s",
        (batch_id,),
    )
    row = cur.fetchone()
    return tuple(row["webhook_secrets"]) if row else ()
