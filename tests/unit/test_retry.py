"""RetryPolicy: the one place that decides whether and when a call is retried."""

from __future__ import annotations

from typing import Any

import pytest

from batchcalls.domain.retry import DEFAULT_RETRY_ON, RetryPolicy
from batchcalls.domain.states import Outcome


def test_delays_grow_by_the_backoff_multiplier() -> None:
    policy = RetryPolicy(max_attempts=5, delay=300, backoff_multiplier=2)
    assert [policy.delay_before(n) for n in (1, 2, 3, 4)] == [300, 600, 1200, 2400]


def test_fractional_backoff() -> None:
    policy = RetryPolicy(max_attempts=3, delay=10, backoff_multiplier=1.5)
    assert policy.delay_before(1) == 10
    assert policy.delay_before(2) == pytest.approx(15)
    assert policy.delay_before(3) == pytest.approx(22.5)


def test_without_backoff_every_retry_waits_the_delay() -> None:
    policy = RetryPolicy(max_attempts=4, delay=45)
    assert [policy.delay_before(n) for n in (1, 2, 3)] == [45, 45, 45]


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=2).delay_before(0)


def test_next_delay_counts_attempts_already_made() -> None:
    policy = RetryPolicy(max_attempts=3, delay=60, backoff_multiplier=2)
    assert policy.next_delay(Outcome.BUSY, attempts_made=1) == 60
    assert policy.next_delay(Outcome.NO_ANSWER, attempts_made=2) == 120
    # max_attempts counts the first attempt: after the third, the call is final.
    assert policy.next_delay(Outcome.BUSY, attempts_made=3) is None
    assert policy.next_delay(Outcome.BUSY, attempts_made=4) is None


@pytest.mark.parametrize(
    "outcome",
    [Outcome.COMPLETED, Outcome.REJECTED, Outcome.MACHINE, Outcome.INVALID_NUMBER, Outcome.CANCELLED],
)
def test_only_outcomes_in_retry_on_are_retried(outcome: Outcome) -> None:
    policy = RetryPolicy(max_attempts=3)  # retry_on defaults to busy, no_answer, failed
    assert policy.next_delay(outcome, attempts_made=1) is None


def test_chosen_outcomes_are_retried() -> None:
    policy = RetryPolicy(max_attempts=2, delay=5, retry_on=frozenset({Outcome.MACHINE}))
    assert policy.next_delay(Outcome.MACHINE, attempts_made=1) == 5
    assert policy.next_delay(Outcome.BUSY, attempts_made=1) is None


def test_no_retry_config_means_one_attempt() -> None:
    policy = RetryPolicy.from_config(None)
    assert policy.max_attempts == 1
    assert policy.next_delay(Outcome.BUSY, attempts_made=1) is None


def test_defaults_of_a_partial_retry_config() -> None:
    policy = RetryPolicy.from_config({"max_attempts": 3})
    assert policy.delay == 60
    assert policy.backoff_multiplier == 1
    assert policy.retry_on == {Outcome.BUSY, Outcome.NO_ANSWER, Outcome.FAILED}
    assert set(DEFAULT_RETRY_ON) == policy.retry_on
    assert policy.next_delay(Outcome.FAILED, attempts_made=2) == 60


def test_empty_retry_config_is_one_attempt() -> None:
    assert RetryPolicy.from_config({}) == RetryPolicy()


def test_from_config_reads_every_field() -> None:
    policy = RetryPolicy.from_config(
        {"max_attempts": 4, "delay": 300, "backoff_multiplier": 2, "retry_on": ["rejected"]}
    )
    assert policy == RetryPolicy(
        max_attempts=4, delay=300, backoff_multiplier=2, retry_on=frozenset({Outcome.REJECTED})
    )
    assert policy.next_delay(Outcome.REJECTED, attempts_made=3) == 1200


def test_to_config_round_trips() -> None:
    policy = RetryPolicy(
        max_attempts=3, delay=30, backoff_multiplier=2, retry_on=frozenset({Outcome.BUSY, Outcome.MACHINE})
    )
    config = policy.to_config()
    assert config == {"max_attempts": 3, "delay": 30, "backoff_multiplier": 2, "retry_on": ["busy", "machine"]}
    assert RetryPolicy.from_config(config) == policy


@pytest.mark.parametrize(
    "fields",
    [
        {"max_attempts": 0},
        {"max_attempts": 11},
        {"max_attempts": True},
        {"delay": -1},
        {"backoff_multiplier": 0.5},
        {"retry_on": frozenset({Outcome.COMPLETED})},
        {"retry_on": frozenset({Outcome.BUSY, Outcome.CANCELLED})},
    ],
)
def test_nonsense_is_rejected_when_built(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**fields)


def test_limits_themselves_are_allowed() -> None:
    policy = RetryPolicy(max_attempts=10, delay=0, backoff_multiplier=1)
    assert policy.next_delay(Outcome.BUSY, attempts_made=9) == 0
    assert policy.next_delay(Outcome.BUSY, attempts_made=10) is None


def test_policies_that_would_wait_unboundedly_are_refused() -> None:
    import pytest as _pytest

    with _pytest.raises(ValueError, match="delay"):
        RetryPolicy(max_attempts=2, delay=86_401)
    with _pytest.raises(ValueError, match="backoff_multiplier"):
        RetryPolicy(max_attempts=2, delay=1, backoff_multiplier=11)
    with _pytest.raises(ValueError, match="last retry"):
        RetryPolicy(max_attempts=10, delay=86_400, backoff_multiplier=2)
    assert RetryPolicy(max_attempts=3, delay=86_400, backoff_multiplier=7).delay_before(2) == 604_800
