"""Fixtures of the unit tests of Redis logic on fakeredis's Lua.

The scripts read the clock with Redis `TIME`; fakeredis answers it from `time.time()` in its
server module, so the `clock` fixture replaces that module's `time` with a clock the test moves.
"""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis
from fakeredis.commands_mixins import server_mixin

from batchcalls.adapters.gates import Gates

LEASE_SECONDS = 30.0
T0 = 1_700_000_000.0


class Clock:
    """Stands in for the `time` module inside fakeredis's server commands."""

    def __init__(self, now: float) -> None:
        self.ms = round(now * 1000)  # whole milliseconds: no drift from adding floats

    @property
    def now(self) -> float:
        return self.ms / 1000

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    frozen = Clock(T0)
    monkeypatch.setattr(server_mixin, "time", frozen)
    return frozen


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    fake = fakeredis.FakeRedis()
    yield fake
    fake.close()


@pytest.fixture
def gates(client: redis.Redis, clock: Clock) -> Gates:
    return Gates(client, lease_seconds=LEASE_SECONDS)
