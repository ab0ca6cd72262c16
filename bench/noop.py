"""Bare Celery for comparison: the product's Celery settings (`create_celery`) and one no-op task.

Workers run `celery -A bench.noop worker` with the same pool settings as the engine's workers.
Each task adds one to a Redis counter; the one that makes it reach the total notes the time, so
the sender measures from its first send to the last task executed.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from config.settings import Settings, load_settings
from workers.celery_app import create_celery

QUEUE = "bench-noop"
DONE_KEY = "bench:noop:done"
FINISHED_KEY = "bench:noop:finished"


def create_app(settings: Settings) -> Celery:
    """The product's Celery app (same broker, same settings), routed to a queue of its own."""
    celery = create_celery(settings)
    celery.conf.task_default_queue = QUEUE
    celery.conf.task_queues = None  # Celery declares the default queue alone, which workers consume
    celery.conf.beat_schedule = {}
    return celery


settings = load_settings()
app = create_app(settings)

_client: tuple[int, redis.Redis] | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(settings.redis_url))
    return _client[1]


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(total: int) -> None:
    client = _redis()
    if client.incr(DONE_KEY) == total:
        client.set(FINISHED_KEY, repr(time.time()))
