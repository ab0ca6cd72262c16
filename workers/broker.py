"""kombu's Redis transport with one Redis client per channel, instead of one per command.

kombu builds a new `redis.Redis` around the channel's connection pool for each publish, ack and
event it sends (`Channel.conn_or_acquire`); building one (its table of ~170 response callbacks)
cost a third of a millisecond, more than the command itself. The client is reused for as long as
the channel keeps its pool; after a reconnect (a new pool) the next command builds a new one.
Everything else is kombu's. Celery uses it through `broker_transport` (workers.celery_app).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _sync_client: tuple[Any, Any] | None = None  # (the pool it was built on, the client)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        cached = self._sync_client
        if cached is None or cached[0] is not pool:
            cached = self._sync_client = (pool, self._create_client())  # type: ignore[no-untyped-call]
        yield cached[1]


class Transport(kombu_redis.Transport):
    Channel = Channel
