"""The fleet page's figures: workers that answer a ping, broker queue depths, the dials counter
(the page turns two readings into calls per second), the tenant's calls waiting for a slot, live
and its events not yet delivered."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from batchcalls.adapters import redis_keys
from batchcalls.adapters.logs import quoted
from batchcalls.adapters.metrics import BROKER_QUEUES
from batchcalls.adapters.store import overview
from batchcalls.adapters.store.db import Database
from config.settings import Settings

log = logging.getLogger("batchcalls.api")

PING_SECONDS = 1.0  # a worker busy for longer than this is not listed until it answers again


class FleetView:
    def __init__(self, settings: Settings, db: Database, client: redis.Redis, celery: Celery) -> None:
        self.settings = settings
        self.db = db
        self.redis = client
        self.celery = celery

    def workers(self) -> list[str] | None:
        """The names of the workers that answered a ping; None when the broker cannot be asked."""
        try:
            replies = self.celery.control.ping(timeout=PING_SECONDS) or []
        except (OSError, redis.RedisError, OperationalError) as exc:
            log.warning("workers not pinged error=%s", quoted(exc))
            return None
        return sorted(name for reply in replies for name in reply)

    def figures(self, tenant_id: int) -> dict[str, Any]:
        with self.db.transaction() as cur:
            active = overview.active_batches_live(cur, tenant_id)
            backlog = overview.undelivered_events(cur, tenant_id)
        pipe = self.redis.pipeline(transaction=False)
        for queue in BROKER_QUEUES:
            pipe.llen(queue)
        for row in active:
            pipe.zcard(redis_keys.batch_ready(row["id"]))
        pipe.hget(redis_keys.METRICS, "dials_total")
        answers = pipe.execute()
        depths: dict[str, int] = {}
        for queue, depth in zip(BROKER_QUEUES, answers, strict=False):
            name = queue.split(":", 1)[0]
            depths[name] = depths.get(name, 0) + int(depth)
        ready = sum(int(n) for n in answers[len(BROKER_QUEUES) : -1])
        return {
            "broker_queues": depths,
            "ready_calls": ready,
            "active_batches": len(active),
            "live_calls": sum(int(row["live"]) for row in active),
            "delivery_backlog": backlog,
            "dials_total": float(answers[-1] or 0),
            "cps_limit": self.settings.cps_limit,
            "flower_url": self.settings.flower_url,
        }
