"""Tenants and their API keys. Keys are stored as SHA-256 hashes; the key itself is shown once."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg2.extras import Json

from batchcalls.adapters.store.db import Cursor, Database, execute
from batchcalls.domain.call_windows import stored_window
from batchcalls.domain.policy import NO_OVERRIDES, POLICY_FIELDS, TenantPolicy
from batchcalls.domain.signing import new_webhook_secret
from batchcalls.domain.window_spec import CallingWindow, to_json

KEY_PREFIX = "bc_live_"

# A tenant's row as `Tenant` reads it (in a query that names tenants `t`).
TENANT_COLUMNS = "t.id, t.name, t.webhook_secrets, " + ", ".join(f"t.{name}" for name in POLICY_FIELDS)


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    webhook_secrets: tuple[str, ...]
    policy: TenantPolicy = NO_OVERRIDES


def _tenant(row: Mapping[str, Any]) -> Tenant:
    return Tenant(row["id"], row["name"], tuple(row["webhook_secrets"]), policy_of(row))


def policy_of(row: Mapping[str, Any]) -> TenantPolicy:
    """The tenant's own values from its row (arrays as tuples; NULL: the default)."""
    countries, types = row["allowed_countries"], row["blocked_number_types"]
    return TenantPolicy(
        max_queued_calls=row["max_queued_calls"],
        max_calls_per_batch=row["max_calls_per_batch"],
        allowed_countries=None if countries is None else tuple(countries),
        blocked_number_types=None if types is None else tuple(types),
        max_calls_per_second=None if (cps := row["max_calls_per_second"]) is None else float(cps),
        max_concurrent_calls=row["max_concurrent_calls"],
        calling_window=stored_window(row["calling_window"]),
        max_dials_per_number=row["max_dials_per_number"],
    )


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_key(db: Database, tenant_name: str) -> tuple[Tenant, str]:
    """Create the tenant if new, and a new API key for it. Returns the tenant and the plain key."""
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO tenants AS t (name, webhook_secrets) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
            " RETURNING " + TENANT_COLUMNS,
            (tenant_name, [new_webhook_secret()]),
        )
        row = cur.fetchone()
        _, api_key = insert_key(cur, row["id"])
    return _tenant(row), api_key


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
    " SELECT k.id AS key_id, " + TENANT_COLUMNS + " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
    " WHERE k.key_hash = %s AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())),"
    " touched AS (UPDATE api_keys SET last_used_at = now() WHERE id = (SELECT key_id FROM k)"
    " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute'))"
    " SELECT * FROM k"
)


def tenant_for_key(db: Database, api_key: str) -> Tenant | None:
    """The tenant of `api_key` while the key is live: neither revoked nor past its expires_at."""
    return tenant_for_key_hash(db, hash_key(api_key))


def tenant_for_key_hash(db: Database, key_hash: str) -> Tenant | None:
    """`tenant_for_key` by the key's hash (`hash_key`): what a dashboard session holds, so that
    a session ends when its key is revoked or expires."""
    with db.transaction() as cur:
        execute(cur, _AUTHENTICATE, (key_hash,))
        row = cur.fetchone()
    if row is None:
        return None
    return _tenant(row)


def webhook_secrets_for_batch(cur: Cursor, batch_id: str) -> tuple[str, ...]:
    """Every secret that signs the batch's events now: the tenant's current secrets, then those
    rotated out whose overlap has not ended (latest to expire first)."""
    execute(
        cur,
        "SELECT t.webhook_secrets || ARRAY(SELECT r.secret FROM retiring_webhook_secrets r"
        " WHERE r.tenant_id = t.id AND r.expires_at > now() ORDER BY r.expires_at DESC, r.secret) AS secrets"
        " FROM batches b JOIN tenants t ON t.id = b.tenant_id WHERE b.id = %s",
        (batch_id,),
    )
    row = cur.fetchone()
    return tuple(row["secrets"]) if row else ()


def policies_by_id(cur: Cursor, tenant_ids: list[int]) -> dict[int, TenantPolicy]:
    """The own policies of the tenants with these ids."""
    cur.execute(f"SELECT {TENANT_COLUMNS} FROM tenants t WHERE t.id = ANY(%s)", (tenant_ids,))
    return {row["id"]: policy_of(row) for row in cur.fetchall()}


def tenant_policy(db: Database, tenant_name: str) -> TenantPolicy | None:
    """The tenant's own policy values, None when there is no such tenant."""
    with db.transaction() as cur:
        cur.execute(f"SELECT {TENANT_COLUMNS} FROM tenants t WHERE t.name = %s", (tenant_name,))
        row = cur.fetchone()
    return None if row is None else policy_of(row)


def _stored(value: object) -> object:
    if isinstance(value, CallingWindow):
        return Json(to_json(value))
    return list(value) if isinstance(value, tuple) else value


def set_tenant_policy(db: Database, tenant_name: str, changes: Mapping[str, object]) -> TenantPolicy | None:
    """Set the tenant's own values named in `changes` (None: back to the default) and return its
    policy, or None when there is no such tenant. The values must be checked by the caller
    (`batchcalls.domain.policy.Policy` does); the table checks only the quotas' range."""
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise ValueError(f"not policy fields: {', '.join(sorted(unknown))}")
    if not changes:
        return tenant_policy(db, tenant_name)
    names = [name for name in POLICY_FIELDS if name in changes]
    values = [_stored(changes[name]) for name in names]
    with db.transaction() as cur:
        cur.execute(
            f"UPDATE tenants t SET {', '.join(f'{name} = %s' for name in names)} WHERE t.name = %s"
            f" RETURNING {TENANT_COLUMNS}",
            (*values, tenant_name),
        )
        row = cur.fetchone()
    return None if row is None else policy_of(row)
