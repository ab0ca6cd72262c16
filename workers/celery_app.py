"""The Celery application, built from settings when `create_celery` runs.

The settings live on the app object (`BatchcallsCelery.settings`), never in `app.conf`: Celery's
configuration is what `celery inspect conf` and Flower's Config tab show, and Celery hides only
keys whose names look secret (and masks the broker URL's password), not the fields of an object
stored under another name. What `app.conf` holds is Celery's own settings and the broker URL.
"""

from __future__ import annotations

from celery import Celery
from kombu.entity import Exchange, Queue

from batchcalls.adapters.queues import CALLS_QUEUE, DELIVERY_QUEUE, QUEUES
from config.settings import Settings, load_settings


class BatchcallsCelery(Celery):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        super().__init__("batchcalls", broker=settings.redis_url)
        self.settings = settings


def create_celery(settings: Settings | None = None) -> BatchcallsCelery:
    settings = settings or load_settings()
    app = BatchcallsCelery(settings)
    app.conf.update(
        # kombu's Redis transport, reusing one Redis client per channel (workers/broker.py).
        broker_transport="workers.broker:Transport",
        # A task whose worker dies is delivered again (every task is idempotent).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Priorities and fair dispatch only work without deep prefetch.
        worker_prefetch_multiplier=1,
        broker_transport_options={
            # Above the longest task and every countdown: a countdown beyond it is delivered
            # more than once. Countdowns here stay under settings.max_countdown_seconds.
            "visibility_timeout": settings.visibility_timeout,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "sep": ":",
        },
        task_default_priority=5,
        # Deliveries on a queue of their own (batchcalls/adapters/queues.py); a worker without
        # `--queues` consumes every queue listed here.
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]
            for name in QUEUES
        ],
        task_default_queue=CALLS_QUEUE,
        task_routes={"batchcalls.deliver": {"queue": DELIVERY_QUEUE}},
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # Task events for Flower, sent by the workers (received, started, succeeded), published
        # together every 10 ms by the worker's consumer (workers/consumer.py). No `task-sent`
        # events: one more Redis publish for every task a sender sends, on the engine's hot
        # path, for a state Flower shows as well from `task-received`.
        worker_send_task_events=True,
        worker_consumer="workers.consumer:Consumer",
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            # First in line: the sweep is what recovers everything else, and costs little.
            "reconcile": {
                "task": "batchcalls.reconcile",
                "schedule": settings.reconcile_seconds,
                "options": {"priority": 0},
            },
        },
        timezone="UTC",
    )
    return app
