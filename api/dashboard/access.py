"""Who may see the dashboard: sign-in with an API key, a signed session cookie, and a CSRF token.

The cookie (`batchcalls_dashboard`, path `/dashboard`) is HttpOnly, SameSite=Strict, and Secure
when the request came over https. It holds the SHA-256 of the key (never the key), so every
request looks the key up as the API does, and a session ends when its key is revoked or expires.
Every POST carries the session's CSRF token, the sign-in form's included (a token made for the
form before anyone is signed in).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from datetime import timedelta
from typing import Any

import redis
from flask import Flask, Request, abort, g, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from api.ratelimit import RequestLimits, client_subject
from batchcalls.adapters import redis_keys
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.tenants import Tenant, hash_key, tenant_for_key, tenant_for_key_hash
from batchcalls.domain.errors import RateLimited

COOKIE = "batchcalls_dashboard"
PATH = "/dashboard"
LIFETIME = timedelta(hours=12)
CSRF_FIELD = "csrf_token"


class SecretSource:
    """The key that signs the cookies: the setting, else one made up once and kept in Redis
    (SET NX: every API process of the fleet reads the same one). Read again at most every
    `REREAD_SECONDS`, so that after Redis lost it every process soon signs with the new one;
    while Redis cannot be reached the last one read is used."""

    REREAD_SECONDS = 60.0

    def __init__(self, configured: str | None, client: redis.Redis) -> None:
        self._configured = configured
        self._client = client
        self._lock = threading.Lock()
        self._secret: str | None = None
        self._read_at = 0.0

    def get(self) -> str:
        if self._configured is not None:
            return self._configured
        with self._lock:
            if self._secret is None or time.monotonic() - self._read_at >= self.REREAD_SECONDS:
                try:
                    self._secret, self._read_at = self._read(), time.monotonic()
                except redis.RedisError:
                    if self._secret is None:
                        raise
            return self._secret

    def _read(self) -> str:
        self._client.set(redis_keys.DASHBOARD_SECRET, secrets.token_urlsafe(48), nx=True)
        stored = self._client.get(redis_keys.DASHBOARD_SECRET)
        if stored is None:  # flushed between the two commands: try again next request
            raise redis.RedisError("the dashboard secret vanished from Redis")
        return stored.decode() if isinstance(stored, bytes) else str(stored)


class DashboardSessions(SecureCookieSessionInterface):
    """Flask's signed cookie sessions, with the dashboard's cookie attributes, on /dashboard only."""

    def __init__(self, source: SecretSource) -> None:
        self.source = source

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not request.path.startswith(PATH):
            return None  # the API's routes have no session (and never reach Redis for one)
        try:
            secret = self.source.get()
        except redis.RedisError:
            return None  # no session: the guard answers 503
        return URLSafeTimedSerializer(
            secret,
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={"key_derivation": self.key_derivation, "digest_method": self.digest_method},
        )

    def get_cookie_name(self, app: Flask) -> str:
        return COOKIE

    def get_cookie_path(self, app: Flask) -> str:
        return PATH

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Strict"

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure)

    def open_session(self, app: Flask, request: Request) -> Any:
        return super().open_session(app, request) if request.path.startswith(PATH) else None


def csrf_token() -> str:
    """The session's token (made on first use), for the forms' hidden field."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """403 unless the POST's form carries the session's token."""
    sent = request.form.get(CSRF_FIELD, "")
    token = session.get("csrf")
    if not isinstance(token, str) or not hmac.compare_digest(sent.encode(), token.encode()):
        abort(403, "the form's security token is missing or stale: reload the page and try again")


def signed_in_tenant(db: Database) -> Tenant | None:
    """The session's tenant, while its key is live and for at most `LIFETIME` after signing in
    (however busy the session: a page left open polls its figures every second)."""
    key_hash, since = session.get("key"), session.get("since")
    if not isinstance(key_hash, str) or not isinstance(since, int | float):
        return None
    tenant = None if time.time() - since > LIFETIME.total_seconds() else tenant_for_key_hash(db, key_hash)
    if tenant is None or tenant.id != session.get("tenant"):
        session.clear()
        return None
    g.tenant = tenant
    return tenant


def sign_in(db: Database, budgets: RequestLimits, api_key: str) -> Tenant | None:
    """The key's tenant, written into a new session, or None; within the failed-authentication
    budget of the client address as the API's key check is (`api.auth.authenticate`)."""
    address = client_subject(request.remote_addr)
    reserved = budgets.reserve(budgets.failed_auth, address)
    if reserved is False:
        standing = budgets.standing(budgets.failed_auth, address, allowed=False)
        retry_after = standing.retry_after if standing is not None else 1
        raise RateLimited(f"too many failed sign-ins from this address; retry in {retry_after} s", retry_after)
    tenant = tenant_for_key(db, api_key) if api_key else None
    if tenant is None:
        return None
    if reserved is not None:
        budgets.refund(budgets.failed_auth, address)
    session.clear()  # a new session: nothing of an earlier one (its CSRF token) carries over
    session.permanent = True
    session["key"] = hash_key(api_key)
    session["tenant"] = tenant.id
    session["since"] = int(time.time())
    csrf_token()
    g.tenant = tenant
    return tenant
