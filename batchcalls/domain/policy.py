"""A tenant's policy: its quotas, where it may call, and its default calling window. Pure: no I/O.

Every limit has a default from settings; a tenant's own value, when set (`batchcalls keys
policy`), replaces it, higher or lower. `TenantPolicy` holds a tenant's own values (None: the
default), `Policy` the values in force.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from batchcalls.domain.destinations import DEFAULT_BLOCKED_TYPES, DestinationPolicy, parse_countries, parse_number_types
from batchcalls.domain.window_spec import CallingWindow, to_json

POLICY_FIELDS = (
    "max_queued_calls",
    "max_calls_per_batch",
    "allowed_countries",
    "blocked_number_types",
    "max_calls_per_second",
    "max_concurrent_calls",
    "calling_window",
    "max_dials_per_number",
)


@dataclass(frozen=True)
class Policy:
    """The limits in force for one tenant. `allowed_countries` empty: every country. The two
    ceilings (None: none) share the provider's calls-per-second limit out under it."""

    max_queued_calls: int
    max_calls_per_batch: int
    allowed_countries: tuple[str, ...] = ()
    blocked_number_types: tuple[str, ...] = DEFAULT_BLOCKED_TYPES
    max_calls_per_second: float | None = None
    max_concurrent_calls: int | None = None
    calling_window: CallingWindow | None = None  # the window of batches that give none
    max_dials_per_number: int | None = None  # in any rolling 24 hours, across the tenant's batches

    def __post_init__(self) -> None:
        optional = ("max_concurrent_calls", "max_dials_per_number")
        for name in ("max_queued_calls", "max_calls_per_batch", *optional):
            value = getattr(self, name)
            if (value is not None or name not in optional) and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        cps = self.max_calls_per_second
        if cps is not None and (isinstance(cps, bool) or not isinstance(cps, int | float) or not 0 < cps <= 10_000):
            raise ValueError(f"max_calls_per_second must be a number above 0 and at most 10000, not {cps!r}")
        object.__setattr__(self, "allowed_countries", parse_countries(self.allowed_countries))
        object.__setattr__(self, "blocked_number_types", parse_number_types(self.blocked_number_types))

    @property
    def destinations(self) -> DestinationPolicy:
        return DestinationPolicy(frozenset(self.allowed_countries), frozenset(self.blocked_number_types))

    def as_dict(self) -> dict[str, object]:
        shown: dict[str, object] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            shown[item.name] = list(value) if isinstance(value, tuple) else value
        if self.calling_window is not None:
            shown["calling_window"] = to_json(self.calling_window)
        return shown


@dataclass(frozen=True)
class TenantPolicy:
    """A tenant's own values; None keeps the default. An empty `allowed_countries` is a value
    (every country), as is an empty `blocked_number_types` (no type blocked)."""

    max_queued_calls: int | None = None
    max_calls_per_batch: int | None = None
    allowed_countries: tuple[str, ...] | None = None
    blocked_number_types: tuple[str, ...] | None = None
    max_calls_per_second: float | None = None
    max_concurrent_calls: int | None = None
    calling_window: CallingWindow | None = None
    max_dials_per_number: int | None = None

    def over(self, defaults: Policy) -> Policy:
        """The policy in force: this tenant's values where set, `defaults` elsewhere."""
        if self == NO_OVERRIDES:
            return defaults
        return Policy(
            **{name: getattr(defaults, name) if (own := getattr(self, name)) is None else own for name in POLICY_FIELDS}
        )

    def overridden(self) -> list[str]:
        return [name for name in POLICY_FIELDS if getattr(self, name) is not None]


NO_OVERRIDES = TenantPolicy()
