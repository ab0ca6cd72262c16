"""Settings from the environment, read when a factory runs (never at import)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta

from batchcalls.domain.destinations import DEFAULT_BLOCKED_TYPES, caller_region, parse_countries, parse_number_types
from batchcalls.domain.policy import Policy


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    return int(raw) if raw not in (None, "") else default


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def _non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, not {value}")
    return value


def _names(
    env: Mapping[str, str],
    name: str,
    default: tuple[str, ...],
    parse: Callable[[Iterable[str]], tuple[str, ...]],
    *,
    nothing: str,
) -> tuple[str, ...]:
    """A comma-separated list. Unset or empty is the default, as for every setting; the word
    `nothing` is the empty list."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if raw.lower() == nothing:
        return ()
    try:
        return parse(raw.split(","))
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    return float(raw) if raw not in (None, "") else default


def _flag(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be true or false, not {raw!r}")


def _optional_float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    return float(raw) if raw not in (None, "") else None


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    provider: str = "simulator"
    max_concurrency: int = 100
    max_body_bytes: int = 20 * 1024 * 1024
    max_csv_bytes: int = 256 * 1024 * 1024
    max_queued_calls: int = 1_000_000
    # Each tenant's defaults; a tenant's own values (`batchcalls keys policy`) replace them.
    tenant_max_queued_calls: int = 100_000
    max_calls_per_batch: int = 100_000
    # Empty: every country. Unset in the environment, load_settings makes it the caller id's
    # country under Vonage (see `default_countries`).
    allowed_countries: tuple[str, ...] = ()
    blocked_number_types: tuple[str, ...] = DEFAULT_BLOCKED_TYPES
    allow_http_callbacks: bool = False
    callback_allowlist: tuple[str, ...] = ()
    rate_limit: str = "1200 per minute"
    # Requests failing authentication allowed per client address; then 429 before any key lookup.
    auth_failure_limit: str = "20 per minute"
    # Proxies in front of the API whose X-Forwarded-For is trusted for the client address (0: none).
    trusted_proxies: int = 0
    # When set, GET /metrics asks for `Authorization: Bearer <this>`.
    metrics_token: str | None = None
    # GET /metrics reads Postgres at most once per this many seconds.
    metrics_cache_seconds: float = 5.0
    public_base_url: str = "http://127.0.0.1:8000"
    # Signs the dashboard's session cookies; unset, one is made up once and kept in Redis, shared
    # by every API process (api/dashboard/secret.py).
    dashboard_secret: str | None = None
    # The dashboard's fleet page links to Flower there when set.
    flower_url: str | None = None
    # Engine timing. The lease outlives every gap between renewals; every countdown stays far
    # below the broker's visibility timeout (a countdown beyond it is delivered more than once).
    lease_seconds: float = 60.0
    reconcile_seconds: float = 5.0
    stale_attempt_seconds: float = 30.0
    max_countdown_seconds: float = 60.0
    visibility_timeout: int = 1800
    webhook_timeout_seconds: float = 10.0
    webhook_retry_hours: float = 25.0
    # Deliveries running at once per tenant, fleet-wide (batchcalls/adapters/delivery/leases.py).
    webhook_tenant_concurrency: int = 2
    # Server-side prepared statements (off behind a pooler in transaction mode, e.g. PgBouncer).
    pg_prepared_statements: bool = True
    # Redis streams that provider events due now travel through (workers/inbox.py).
    event_shards: int = 16
    # Calling windows are read on the clock moved by this much (tests run a window at another hour).
    clock_offset_seconds: float = 0.0
    # Simulator.
    sim_ring_seconds: float = 0.5
    sim_call_seconds: float = 2.0
    sim_cps: float | None = None
    sim_log: str | None = None
    sim_chaos: str | None = None
    # Vonage.
    vonage_application_id: str | None = None
    vonage_private_key: str | None = None
    vonage_from_number: str | None = None
    vonage_signature_secret: str | None = None
    # Accept Vonage webhooks without a signature (development only; see load_settings).
    vonage_allow_unsigned: bool = False
    vonage_api_host: str = "api.nexmo.com"
    vonage_ca_bundle: str | None = None
    vonage_cps: float = 3.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def clock_offset(self) -> timedelta:
        return timedelta(seconds=self.clock_offset_seconds)

    @property
    def tenant_defaults(self) -> Policy:
        """The policy of a tenant that has no values of its own."""
        return Policy(
            self.tenant_max_queued_calls, self.max_calls_per_batch, self.allowed_countries, self.blocked_number_types
        )

    @property
    def cps_limit(self) -> float | None:
        """Calls per second allowed across the fleet for the configured provider."""
        return self.vonage_cps if self.provider == "vonage" else self.sim_cps

    @property
    def cps_margin(self) -> float:
        """Seconds added to the calls-per-second window for the spread of the provider's request
        latency: creations are spaced when they are sent, a provider counts them as they arrive."""
        return 0.05 if self.provider == "vonage" else 0.0

    @property
    def provider_account(self) -> str:
        """Key of the provider account whose calls-per-second bucket is shared."""
        if self.provider == "vonage":
            return f"vonage:{self.vonage_application_id}"
        return "simulator"

    def __repr__(self) -> str:
        """Every field but the secrets' values: a repr ends up in logs, tracebacks and dumps."""
        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            if is_secret(item.name) and value:
                value = MASK
            elif isinstance(value, dict):
                value = {name: MASK if is_secret(name) and v else v for name, v in value.items()}
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"


MASK = "********"
# A rule, not a list, so that a new credential cannot be forgotten: every setting whose name says
# it may hold one is masked (a URL may hold a password).
SECRET_NAME_PARTS = ("token", "secret", "key", "password", "url")


def is_secret(name: str) -> bool:
    """Whether the setting named `name` is masked in the repr."""
    return any(part in name.lower() for part in SECRET_NAME_PARTS)


def default_countries(provider: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """Where tenants may call when BATCHCALLS_ALLOWED_COUNTRIES is unset. Under Vonage, only the
    caller id's country: international revenue-share fraud dials ordinary fixed and mobile
    numbers of high-cost countries, which no number type block catches, so calling abroad is
    something an operator turns on (`all`, a list, or per tenant). The simulator costs nothing:
    every country."""
    if provider != "vonage" or (env.get("BATCHCALLS_ALLOWED_COUNTRIES") or "").strip():
        return ()
    from_number = env.get("VONAGE_FROM_NUMBER") or ""
    region = caller_region(from_number)
    if region is None:
        raise ValueError(
            f"BATCHCALLS_PROVIDER=vonage calls only the country of VONAGE_FROM_NUMBER unless"
            f" BATCHCALLS_ALLOWED_COUNTRIES says otherwise, and VONAGE_FROM_NUMBER ({from_number!r}) names"
            " no country: set it to a phone number in E.164 form, like +447700900000, or set"
            " BATCHCALLS_ALLOWED_COUNTRIES (country codes such as GB,IE, or all)"
        )
    return (region,)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    database_url = env.get("DATABASE_URL", "")
    redis_url = env.get("REDIS_URL", "")
    vonage_configured = bool(env.get("VONAGE_APPLICATION_ID") and env.get("VONAGE_PRIVATE_KEY"))
    provider = env.get("BATCHCALLS_PROVIDER") or ("vonage" if vonage_configured else "simulator")
    if provider not in {"vonage", "simulator"}:
        raise ValueError("BATCHCALLS_PROVIDER must be 'vonage' or 'simulator'")
    signature_secret = env.get("VONAGE_SIGNATURE_SECRET") or None
    allow_unsigned = _flag(env, "VONAGE_ALLOW_UNSIGNED")
    if provider == "vonage" and signature_secret is None and not allow_unsigned:
        # Unsigned, anyone who learns a call id could end its calls or read its script.
        raise ValueError(
            "BATCHCALLS_PROVIDER=vonage needs VONAGE_SIGNATURE_SECRET (the account's signature secret, with"
            " which Vonage signs its webhooks); VONAGE_ALLOW_UNSIGNED=1 accepts unsigned webhooks, for"
            " development only"
        )
    allowlist = tuple(item.strip() for item in env.get("BATCHCALLS_CALLBACK_ALLOWLIST", "").split(",") if item.strip())
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        provider=provider,
        max_concurrency=_int(env, "BATCHCALLS_MAX_CONCURRENCY", 100),
        max_body_bytes=_int(env, "BATCHCALLS_MAX_BODY_BYTES", 20 * 1024 * 1024),
        max_csv_bytes=_positive_int(env, "BATCHCALLS_MAX_CSV_BYTES", 256 * 1024 * 1024),
        max_queued_calls=_int(env, "BATCHCALLS_MAX_QUEUED_CALLS", 1_000_000),
        tenant_max_queued_calls=_positive_int(env, "BATCHCALLS_TENANT_MAX_QUEUED_CALLS", 100_000),
        max_calls_per_batch=_positive_int(env, "BATCHCALLS_MAX_CALLS_PER_BATCH", 100_000),
        allowed_countries=_names(
            env, "BATCHCALLS_ALLOWED_COUNTRIES", default_countries(provider, env), parse_countries, nothing="all"
        ),
        blocked_number_types=_names(
            env, "BATCHCALLS_BLOCKED_NUMBER_TYPES", DEFAULT_BLOCKED_TYPES, parse_number_types, nothing="none"
        ),
        allow_http_callbacks=_flag(env, "BATCHCALLS_ALLOW_HTTP_CALLBACKS"),
        callback_allowlist=allowlist,
        rate_limit=env.get("BATCHCALLS_RATE_LIMIT") or "1200 per minute",
        auth_failure_limit=env.get("BATCHCALLS_AUTH_FAILURE_LIMIT") or "20 per minute",
        trusted_proxies=_non_negative_int(env, "BATCHCALLS_TRUSTED_PROXIES", 0),
        metrics_token=env.get("BATCHCALLS_METRICS_TOKEN") or None,
        metrics_cache_seconds=_float(env, "BATCHCALLS_METRICS_CACHE_SECONDS", 5.0),
        public_base_url=env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:8000",
        dashboard_secret=env.get("BATCHCALLS_DASHBOARD_SECRET") or None,
        flower_url=env.get("BATCHCALLS_FLOWER_URL") or None,
        lease_seconds=_float(env, "BATCHCALLS_LEASE_SECONDS", 60.0),
        reconcile_seconds=_float(env, "BATCHCALLS_RECONCILE_SECONDS", 5.0),
        stale_attempt_seconds=_float(env, "BATCHCALLS_STALE_ATTEMPT_SECONDS", 30.0),
        max_countdown_seconds=_float(env, "BATCHCALLS_MAX_COUNTDOWN_SECONDS", 60.0),
        visibility_timeout=_int(env, "BATCHCALLS_VISIBILITY_TIMEOUT", 1800),
        webhook_timeout_seconds=_float(env, "BATCHCALLS_WEBHOOK_TIMEOUT_SECONDS", 10.0),
        webhook_retry_hours=_float(env, "BATCHCALLS_WEBHOOK_RETRY_HOURS", 25.0),
        webhook_tenant_concurrency=_positive_int(env, "BATCHCALLS_WEBHOOK_TENANT_CONCURRENCY", 2),
        pg_prepared_statements=_flag(env, "BATCHCALLS_PG_PREPARED_STATEMENTS", default=True),
        event_shards=_positive_int(env, "BATCHCALLS_EVENT_SHARDS", 16),
        clock_offset_seconds=_float(env, "BATCHCALLS_CLOCK_OFFSET_SECONDS", 0.0),
        sim_ring_seconds=_float(env, "BATCHCALLS_SIM_RING_SECONDS", 0.5),
        sim_call_seconds=_float(env, "BATCHCALLS_SIM_CALL_SECONDS", 2.0),
        sim_cps=_optional_float(env, "BATCHCALLS_SIM_CPS"),
        sim_log=env.get("BATCHCALLS_SIM_LOG") or None,
        sim_chaos=env.get("BATCHCALLS_SIM_CHAOS") or None,
        vonage_application_id=env.get("VONAGE_APPLICATION_ID") or None,
        vonage_private_key=env.get("VONAGE_PRIVATE_KEY") or None,
        vonage_from_number=env.get("VONAGE_FROM_NUMBER") or None,
        vonage_signature_secret=signature_secret,
        vonage_allow_unsigned=allow_unsigned,
        vonage_api_host=env.get("VONAGE_API_HOST") or "api.nexmo.com",
        vonage_ca_bundle=env.get("VONAGE_CA_BUNDLE") or None,
        vonage_cps=_float(env, "VONAGE_CPS", 3.0),
    )
