"""An engine in the test's own process, on real PostgreSQL and Redis, whose task queue keeps what
it is given in lists: the test runs each step itself. `engine_on(servers)` gives one on a
database and Redis number of its own (a sweep looks at every active batch)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from batchcalls.adapters.gates import Gates
from batchcalls.adapters.store.db import Database, close_pools
from batchcalls.adapters.store.migrate import upgrade
from batchcalls.adapters.telephony.simulator import SimulatorProvider
from batchcalls.engine import Engine
from config.settings import Settings
from tests.support.servers import TestServers, more_test_servers


@dataclass
class ListQueue:
    """The engine's task queue, kept in lists: the test runs each step itself."""

    places: list[str] = field(default_factory=list)
    delivers: list[tuple[str, float]] = field(default_factory=list)  # (batch id, countdown)
    hang_ups: list[str] = field(default_factory=list)
    dispatches: list[str] = field(default_factory=list)
    starts: list[tuple[str, float]] = field(default_factory=list)  # (batch id, countdown)

    def dispatch(self, batch_id: str, *args: Any, **kwargs: Any) -> None:
        self.dispatches.append(batch_id)

    def place_call(self, batch_id: str, call_id: str, *args: Any, **kwargs: Any) -> None:
        self.places.append(call_id)

    def place_calls(self, batch_id: str, call_ids: list[str], *args: Any, **kwargs: Any) -> None:
        self.places.extend(call_ids)

    def wake(self, *args: Any, **kwargs: Any) -> None: ...
    def pace(self, *args: Any, **kwargs: Any) -> None: ...
    def deliver(self, batch_id: str, countdown: float = 0) -> None:
        self.delivers.append((batch_id, countdown))

    def record_event(self, *args: Any, **kwargs: Any) -> None: ...
    def record_events(self, *args: Any, **kwargs: Any) -> None: ...
    def recover_events(self) -> int:
        return 0

    def record_responses(self, *args: Any, **kwargs: Any) -> None: ...
    def record_input(self, *args: Any, **kwargs: Any) -> None: ...
    def expire(self, *args: Any, **kwargs: Any) -> None: ...
    def start(self, batch_id: str, countdown: float = 0) -> None:
        self.starts.append((batch_id, countdown))

    def hang_up(self, batch_id: str, call_id: str, *args: Any, **kwargs: Any) -> None:
        self.hang_ups.append(call_id)

    def leave_voicemail(self, *args: Any, **kwargs: Any) -> None: ...


@contextlib.contextmanager
def engine_on(servers: TestServers) -> Iterator[Engine]:
    with more_test_servers(servers) as own:  # the sweep looks at every active batch
        upgrade(own.database_url)
        settings = Settings(database_url=own.database_url, redis_url=own.redis_url)
        client = redis.Redis.from_url(own.redis_url)
        provider = SimulatorProvider(schedule=lambda event, delay: None, ring_seconds=60, call_seconds=60)
        yield Engine(settings, Database(own.database_url), Gates(client, settings.lease_seconds), ListQueue(), provider)
        client.close()
        close_pools()
