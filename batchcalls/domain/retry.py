"""The one retry policy. Built once from `retry_config`, validated in its constructor, and the only
place that computes a retry delay or decides whether an outcome is retried."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchcalls.domain.states import RETRYABLE_OUTCOMES, Outcome

DEFAULT_RETRY_ON = (Outcome.BUSY, Outcome.NO_ANSWER, Outcome.FAILED)
MAX_ATTEMPTS_LIMIT = 10
MAX_DELAY_SECONDS = 86_400.0  # one day between attempts at most
MAX_BACKOFF_MULTIPLIER = 10.0
MAX_RETRY_WAIT_SECONDS = 7 * 86_400.0  # the longest single wait a policy may produce


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` counts the first attempt; retry n (n >= 1) waits
    `delay * backoff_multiplier ** (n - 1)` seconds from the end of the attempt before it."""

    max_attempts: int = 1
    delay: float = 60.0
    backoff_multiplier: float = 1.0
    retry_on: frozenset[Outcome] = field(default_factory=lambda: frozenset(DEFAULT_RETRY_ON))

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
        if not 0 <= self.delay <= MAX_DELAY_SECONDS:
            raise ValueError(f"delay must be between 0 and {MAX_DELAY_SECONDS:.0f} seconds")
        if not 1 <= self.backoff_multiplier <= MAX_BACKOFF_MULTIPLIER:
            raise ValueError(f"backoff_multiplier must be between 1 and {MAX_BACKOFF_MULTIPLIER:.0f}")
        if self.max_attempts > 1 and self.delay_before(self.max_attempts - 1) > MAX_RETRY_WAIT_SECONDS:
            raise ValueError(
                f"the last retry would wait {self.delay_before(self.max_attempts - 1):.0f}s;"
                f" at most {MAX_RETRY_WAIT_SECONDS:.0f}s is allowed"
            )
        unknown = set(self.retry_on) - RETRYABLE_OUTCOMES
        if unknown:
            raise ValueError(f"retry_on may not contain {sorted(o.value for o in unknown)}")

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> RetryPolicy:
        """The policy for a request's `retry_config`; None means a single attempt."""
        if config is None:
            return cls()
        retry_on = config.get("retry_on")
        return cls(
            max_attempts=config.get("max_attempts", 1),
            delay=config.get("delay", 60.0),
            backoff_multiplier=config.get("backoff_multiplier", 1.0),
            retry_on=frozenset(Outcome(o) for o in retry_on) if retry_on is not None else frozenset(DEFAULT_RETRY_ON),
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "delay": self.delay,
            "backoff_multiplier": self.backoff_multiplier,
            "retry_on": sorted(o.value for o in self.retry_on),
        }

    def delay_before(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (the first retry is 1)."""
        if retry_number < 1:
            raise ValueError("retry_number starts at 1")
        return float(self.delay * self.backoff_multiplier ** (retry_number - 1))

    def next_delay(self, outcome: Outcome, attempts_made: int) -> float | None:
        """Seconds until the next attempt after `attempts_made` attempts ended with `outcome`,
        or None when the call is final."""
        if outcome not in self.retry_on or attempts_made >= self.max_attempts:
            return None
        return self.delay_before(attempts_made)
