"""Request budgets of the /v1 API, counted in Redis so that they hold across API processes.

Two policies: `tenant` (BATCHCALLS_RATE_LIMIT), spent by every request of an authenticated
tenant whichever of its keys it used, and `failed-auth` (BATCHCALLS_AUTH_FAILURE_LIMIT), spent
by each request from a client address that fails authentication; once that one is spent, the
address is refused before its key is looked up (`api.auth.authenticate` says how). The client
address is bucketed (`client_subject`): an IPv6 client by its /64. Redis key names hold a tenant
id or a client address, never a key. Each answer advertises its policy with the `RateLimit-Policy` and
`RateLimit` fields of draft-ietf-httpapi-ratelimit-headers (a 429 adds `Retry-After`).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import cast

import limits
import redis
from flask import Response
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry

from batchcalls.adapters.logs import quoted

log = logging.getLogger("batchcalls.api")

TENANT_POLICY = "tenant"
FAILED_AUTH_POLICY = "failed-auth"


@dataclass(frozen=True)
class Policy:
    name: str
    item: limits.RateLimitItem

    @property
    def window(self) -> int:
        return int(self.item.get_expiry())

    def field(self) -> str:
        """This policy as an item of the `RateLimit-Policy` field."""
        return f'"{self.name}";q={self.item.amount};w={self.window}'


@dataclass(frozen=True)
class Standing:
    """What is left of a policy's quota for one subject (a tenant, a client address)."""

    policy: Policy
    remaining: int
    reset_in: int  # seconds until the oldest request of the window stops counting
    allowed: bool

    @property
    def retry_after(self) -> int:
        return max(1, self.reset_in)

    def apply(self, response: Response) -> None:
        response.headers["RateLimit-Policy"] = self.policy.field()
        response.headers["RateLimit"] = f'"{self.policy.name}";r={self.remaining};t={self.reset_in}'


def client_subject(address: str | None) -> str:
    """The failed-authentication budget's subject for a client address: an IPv4 address itself,
    an IPv6 address its /64 (one host is routinely given a whole /64, so counting single
    addresses would give it 2^64 budgets). An IPv4-mapped IPv6 address counts as its IPv4
    address. Anything else (no address, a Unix socket) is its own text."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # without an IPv6 zone index
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _policy(name: str, setting: str, text: str) -> Policy:
    try:
        items = limits.parse_many(text)
    except ValueError as exc:
        raise ValueError(f"{setting} is not a rate limit such as '1200 per minute': {text!r}") from exc
    if len(items) != 1:
        raise ValueError(f"{setting} must be one rate limit such as '1200 per minute', not {text!r}")
    return Policy(name, items[0])


class RequestLimits:
    """The two policies over one Redis. With Redis unreachable nothing is limited (each
    request logs a warning): refusing every request would turn a Redis outage into an API outage."""

    def __init__(self, redis_url: str, *, tenant_limit: str, auth_failure_limit: str) -> None:
        self.tenant = _policy(TENANT_POLICY, "BATCHCALLS_RATE_LIMIT", tenant_limit)
        self.failed_auth = _policy(FAILED_AUTH_POLICY, "BATCHCALLS_AUTH_FAILURE_LIMIT", auth_failure_limit)
        # One attempt: a request waits for one refused connection, not for redis-py's retries.
        self._storage = RedisStorage(redis_url, retry=Retry(NoBackoff(), 0))  # type: ignore[arg-type]
        self._windows = MovingWindowRateLimiter(self._storage)

    def spend(self, policy: Policy, subject: str) -> Standing | None:
        """Count one request of `subject` against `policy` (a refused one is not counted), and
        where that leaves it. None when Redis cannot be reached."""
        allowed = self.reserve(policy, subject)
        return None if allowed is None else self.standing(policy, subject, allowed=allowed)

    def reserve(self, policy: Policy, subject: str) -> bool | None:
        """Count one request of `subject` against `policy` in one atomic step: True when it fits,
        False when refused (not counted), None when Redis cannot be reached."""
        try:
            return bool(self._windows.hit(policy.item, policy.name, subject))
        except redis.RedisError as exc:
            log.warning("rate limit not enforced, Redis unavailable policy=%s error=%s", policy.name, quoted(exc))
            return None

    def standing(self, policy: Policy, subject: str, *, allowed: bool) -> Standing | None:
        """What is left of `subject`'s quota, for the answer's fields; None when Redis cannot be
        reached."""
        try:
            return self._standing(policy, subject, allowed=allowed)
        except redis.RedisError as exc:
            log.warning("rate limit not read, Redis unavailable policy=%s error=%s", policy.name, quoted(exc))
            return None

    def refund(self, policy: Policy, subject: str) -> None:
        """Give back one request `spend` counted for `subject`. The moving window is a Redis list
        of the counted requests' times, newest first; LPOP drops the newest, which is this
        request's or one counted at about the same moment (atomic, and never below empty).
        With Redis unreachable the entry stays and ages out with the window."""
        try:
            window = self._storage.prefixed_key(policy.item.key_for(policy.name, subject))
            cast(redis.Redis, self._storage.get_connection()).lpop(window)
        except redis.RedisError as exc:
            log.warning("rate limit not refunded, Redis unavailable policy=%s error=%s", policy.name, quoted(exc))

    def _standing(self, policy: Policy, subject: str, *, allowed: bool | None) -> Standing:
        reset_at, remaining = self._windows.get_window_stats(policy.item, policy.name, subject)
        remaining = max(0, remaining)
        reset_in = max(0, math.ceil(reset_at - time.time()))
        return Standing(policy, remaining, reset_in, remaining > 0 if allowed is None else allowed)
