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
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO tenants (name, webhook_secrets) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
            " RETURNING id, name, webhook_secrets",
            (tenant_name, [new_webhook_secret()]),
        )
        row = cur.fetchone()
        _, api_key = insert_key(cur, row["id"])
    return Tenant(row["id"], row["name"], tuple(row["webhook_secrets"])), api_key


def insert_key(cur: Cursor, tenant_id: int) -> tuple[int, str]:
    """A new key for the tenant, in the caller's transaction. Returns its id and the plain key."""
    api_key = KEY_PREFIX + secrets.token_urlsafe(30)
    cur.execute(
        "INSERT INTO api_keys (tenant_id, key_hash, prefix) VALUES (%s, %s, %s) RETURNING id",
        (tenant_id, hash_key(api_key), api_key[: len(KEY_PREFIX) + 6]),
    )
    return int(cur.fetchone()["id"]), api_key


# The key's row is touched at most once a minute: `keys list` shows when it was last used without
# a write on every request.
_AUTHENTICATE = (
    "WITH k AS ("
    " SELECT k.id AS key_id, t.id, t.name, t.webhook_secrets FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
    " WHERE k.key_hash = %s AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())),"
    " touched AS (UPDATE api_keys SET last_used_at = now() WHERE id = (SELECT key_id FROM k)"
    " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute'))"
    " SELECT id, name, webhook_secrets FROM k"
)


def tenant_for_key(db: Database, api_key: str) -> Tenant | None:
    """The tenant of `api_key` while the key is live: neither revoked nor past its expires_at."""
    with db.transaction() as cur:
        execute(cur, _AUTHENTICATE, (hash_key(api_key),))
        row = cur.fetchone()
    if row is None:
        return None
    return Tenant(row["id"], row["name"], tuple(row["webhook_secrets"]))


def webhook_secrets_for_batch(cur: Cursor, batch_id: str) -> tuple[str, ...]:
    """Every secret that signs the batch's events now: the tenant's current secrets, then those
    rotated out whose overlap has not ended (latest to expire first)."""
    execute(
        cur, "SELECT t.webhook_secrets || ARRAY(SELECT r.secret FROM retiring_webhook_secrets r"
        " WHERE r.tenant_id = t.id AND r.expires_at > now() ORDER BY r.expires_at DESC, r.secret) AS secrets"
        " FROM batches b JOIN tenants t ON t.id = b.tenant_id WHERE b.id = %s",
        (batch_id,),
    )
    row = cur.fetchone()
    return tuple(row["secrets"]) if row else ()
