"""The life of API keys and webhook secrets after they are made: list, revoke, rotate.

A rotation never cuts clients off at once: the old keys (or secrets) stay valid for an overlap,
so that every client can switch to the new one, and stop at its end. Times are the database's
clock (`now()`), the same one authentication and signing compare them with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from batchcalls.adapters.store.db import Cursor, Database
from batchcalls.adapters.store.tenants import KEY_PREFIX, hash_key, insert_key
from batchcalls.domain.errors import NotFound
from batchcalls.domain.signing import new_webhook_secret


class TenantNotFound(NotFound):
    code = "tenant_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a key: never the key nor its hash."""

    id: int
    prefix: str
    tenant: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    status: str  # active | expiring (in an overlap) | expired | revoked


@dataclass(frozen=True)
class Rotated:
    tenant: str
    new: str  # the new key or secret, shown once
    key_id: int | None  # the new key's id (None for a webhook secret)
    old_valid_until: datetime | None  # when the previous keys/secrets stop; None: there were none


_KEY_COLUMNS = (
    "SELECT k.id, k.prefix, t.name AS tenant, k.created_at, k.last_used_at, k.expires_at, k.revoked_at,"
    " CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked'"
    " WHEN k.expires_at <= now() THEN 'expired'"
    " WHEN k.expires_at IS NOT NULL THEN 'expiring' ELSE 'active' END AS status"
    " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
)


def _key_info(row: dict[str, Any]) -> KeyInfo:
    return KeyInfo(
        row["id"],
        row["prefix"],
        row["tenant"],
        row["created_at"],
        row["last_used_at"],
        row["expires_at"],
        row["revoked_at"],
        row["status"],
    )


def list_keys(db: Database, tenant: str | None = None) -> list[KeyInfo]:
    """Every key (of `tenant` when given), oldest first. Raises TenantNotFound for an unknown tenant."""
    with db.transaction() as cur:
        if tenant is not None:
            _tenant_id(cur, tenant, lock=False)
        cur.execute(_KEY_COLUMNS + " WHERE %(tenant)s IS NULL OR t.name = %(tenant)s ORDER BY k.id", {"tenant": tenant})
        return [_key_info(row) for row in cur.fetchall()]


def _matching_keys(cur: Cursor, ident: str) -> list[dict[str, Any]]:
    """Keys named by `ident`: an id, a prefix as `keys list` shows it, or the whole key."""
    ident = ident.strip()
    if re.fullmatch(r"\d{1,18}", ident):
        cur.execute("SELECT id FROM api_keys WHERE id = %s", (int(ident),))
    elif ident.startswith(KEY_PREFIX):
        cur.execute("SELECT id FROM api_keys WHERE prefix = %s OR key_hash = %s ORDER BY id", (ident, hash_key(ident)))
    else:
        return []
    return list(cur.fetchall())


def revoke_key(db: Database, ident: str) -> tuple[KeyInfo, bool]:
    """Revoke the key named by `ident` (see `_matching_keys`); it stops authenticating with this
    commit. Returns the key and whether this call revoked it (False: it already was).
    Raises KeyNotFound when `ident` names no key, or several (a prefix two keys share)."""
    with db.transaction() as cur:
        found = _matching_keys(cur, ident)
        if not found:
            raise KeyNotFound(f"no API key {ident!r}: give a key id or prefix as `batchcalls keys list` shows it")
        if len(found) > 1:
            ids = ", ".join(str(row["id"]) for row in found)
            raise KeyNotFound(f"{ident!r} names keys {ids}: give one key id", details={"key_ids": ids})
        cur.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id",
            (found[0]["id"],),
        )
        revoked_now = cur.fetchone() is not None
        cur.execute(_KEY_COLUMNS + " WHERE k.id = %s", (found[0]["id"],))
        return _key_info(cur.fetchone()), revoked_now


def revoke_exact_key(db: Database, api_key: str, *, tenant: str) -> bool:
    """Revoke the key that is exactly `api_key` (its hash matches) when it belongs to `tenant`;
    whether this call revoked it. Never by id or prefix, unlike `revoke_key`: for text read from
    a file that may have been changed, which must not name another key."""
    with db.transaction() as cur:
        cur.execute(
            "UPDATE api_keys k SET revoked_at = now() FROM tenants t"
            " WHERE t.id = k.tenant_id AND t.name = %s AND k.key_hash = %s AND k.revoked_at IS NULL"
            " RETURNING k.id",
            (tenant, hash_key(api_key.strip())),
        )
        return cur.fetchone() is not None


def _tenant_id(cur: Cursor, tenant: str, *, lock: bool) -> int:
    cur.execute("SELECT id FROM tenants WHERE name = %s" + (" FOR UPDATE" if lock else ""), (tenant,))
    row = cur.fetchone()
    if row is None:
        raise TenantNotFound(f"no tenant {tenant!r}: `batchcalls keys create --tenant {tenant}` makes it")
    return int(row["id"])


def rotate_key(db: Database, tenant: str, *, overlap: timedelta) -> Rotated:
    """A new key for `tenant`; its live keys stay valid until `overlap` from now (or their own
    earlier end), then stop. Raises TenantNotFound: rotation never creates a tenant."""
    with db.transaction() as cur:
        tenant_id = _tenant_id(cur, tenant, lock=True)
        cur.execute(
            "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), now() + %s)"
            " WHERE tenant_id = %s AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
            " RETURNING expires_at",
            (overlap, tenant_id),
        )
        ends = [row["expires_at"] for row in cur.fetchall()]
        key_id, api_key = insert_key(cur, tenant_id)
    return Rotated(tenant, api_key, key_id, max(ends) if ends else None)


def rotate_webhook_secret(db: Database, tenant: str, *, overlap: timedelta) -> Rotated:
    """A new webhook secret for `tenant`, signing from this commit on; the secrets it replaces
    keep signing beside it until `overlap` from now (or their own earlier end).
    Raises TenantNotFound."""
    secret = new_webhook_secret()
    with db.transaction() as cur:
        tenant_id = _tenant_id(cur, tenant, lock=True)
        cur.execute("DELETE FROM retiring_webhook_secrets WHERE tenant_id = %s AND expires_at <= now()", (tenant_id,))
        cur.execute(
            "UPDATE retiring_webhook_secrets SET expires_at = LEAST(expires_at, now() + %s) WHERE tenant_id = %s",
            (overlap, tenant_id),
        )
        cur.execute(
            "INSERT INTO retiring_webhook_secrets (tenant_id, secret, expires_at)"
            " SELECT id, unnest(webhook_secrets), now() + %s FROM tenants WHERE id = %s"
            " ON CONFLICT (tenant_id, secret) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            (overlap, tenant_id),
        )
        cur.execute("UPDATE tenants SET webhook_secrets = %s WHERE id = %s", ([secret], tenant_id))
        cur.execute(
            "SELECT max(expires_at) AS until FROM retiring_webhook_secrets WHERE tenant_id = %s AND expires_at > now()",
            (tenant_id,),
        )
        until = cur.fetchone()["until"]
    return Rotated(tenant, secret, None, until)
