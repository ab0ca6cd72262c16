"""The check of a signed Vonage webhook: the signature JWT (young, with a `jti`, over the body),
and the Redis key that takes each token once. Pure: no I/O."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from typing import Any

import jwt

from batchcalls.adapters import redis_keys
from batchcalls.domain.errors import Unauthorized

# A signed webhook is taken for this long after Vonage signed it (its `iat`), and a clock this
# far ahead of ours is tolerated. Each token is taken once: its `jti` is remembered a little
# longer than a token can be taken, so a replay within its age is refused too.
MAX_TOKEN_AGE_SECONDS = 300
CLOCK_SKEW_SECONDS = 30
REPLAY_TTL_SECONDS = MAX_TOKEN_AGE_SECONDS + CLOCK_SKEW_SECONDS + 60


def verify_token(authorization: str | None, secret: str, *, now: float) -> dict[str, Any]:
    """The claims of a signed Vonage webhook's JWT, checked from its header alone (before the
    body is read), or `Unauthorized`.

    Vonage signs each webhook with a JWT (HS256, keyed with the account's signature secret) in
    `Authorization: Bearer <jwt>`, with `iat` (when it signed), `jti` (the token's unique id) and
    `payload_hash` (the SHA-256, hex, of the body). A token is taken only while young (`iat`
    within `MAX_TOKEN_AGE_SECONDS`, not ahead of our clock by more than `CLOCK_SKEW_SECONDS`)
    and must carry a `jti`, so that the caller can take it once."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("webhook is not signed: expected Authorization: Bearer <jwt>")
    try:
        # Times are checked below against the caller's clock.
        claims: dict[str, Any] = jwt.decode(
            token.strip(),
            secret,
            algorithms=["HS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"webhook signature is not valid: {exc}") from exc
    issued: Any = claims.get("iat")
    if not _is_number(issued):
        raise Unauthorized("webhook signature has no issue time (iat)")
    if now - issued > MAX_TOKEN_AGE_SECONDS:
        raise Unauthorized("webhook signature is too old (iat)")
    if issued - now > CLOCK_SKEW_SECONDS:
        raise Unauthorized("webhook signature is issued in the future (iat)")
    expires: Any = claims.get("exp")
    if expires is not None and (not _is_number(expires) or now > expires + CLOCK_SKEW_SECONDS):
        raise Unauthorized("webhook signature has expired (exp)")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 200:
        raise Unauthorized("webhook signature has no token id (jti)")
    return claims


def check_payload_hash(claims: Mapping[str, Any], body: bytes) -> None:
    """`Unauthorized` unless the token's `payload_hash` is that of `body`. The SDK checks only
    the JWT: the hash is what ties the signature to this body, so a body without a matching hash
    is refused too."""
    claimed = claims.get("payload_hash")
    if claimed is None:
        if body:
            raise Unauthorized("webhook signature does not cover its body (no payload_hash)")
    elif not isinstance(claimed, str) or not hmac.compare_digest(claimed.lower(), hashlib.sha256(body).hexdigest()):
        raise Unauthorized("webhook body does not match its signature's payload_hash")


def verify_signature(authorization: str | None, body: bytes, secret: str, *, now: float) -> dict[str, Any]:
    """The claims of a signed Vonage webhook whose token and body are both good, or `Unauthorized`."""
    claims = verify_token(authorization, secret, now=now)
    check_payload_hash(claims, body)
    return claims


def replay_key(claims: Mapping[str, Any]) -> str:
    """The Redis key that marks a signed webhook's token as taken."""
    return redis_keys.vonage_replay(str(claims["jti"]))


def _is_number(value: object) -> bool:
    """A finite JSON number (Python's JSON reader takes `NaN` and `Infinity`, which compare false
    with everything)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
