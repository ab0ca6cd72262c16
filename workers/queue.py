"""The engine's TaskQueue on Celery: every task is sent by name, so senders need no task code.

A task's arguments are ids, counts and provider statuses: Flower and `celery inspect` show them
(`argsrepr` on task pages; the arguments themselves for active, reserved and scheduled tasks), so
no phone number, script text or callee's answer is ever one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from batchcalls.domain.models import ProviderEvent
from batchcalls.engine import EVENT_PRIORITY
from workers.celery_app import BatchcallsCelery
from workers.inbox import Inbox

# What Flower shows of a task's arguments is cut at this length, as Celery's own repr cuts it.
REPR_MAX = 1024


class CeleryTaskQueue:
    def __init__(self, app: BatchcallsCelery) -> None:
        self.app = app

    def _send(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None = None,
        *,
        shown: Sequence[Any] | None = None,
        **options: Any,
    ) -> None:
        """`send_task` with the arguments' repr (what Flower's task pages show, `shown` when
        given) made by the builtin `repr`: Celery's own (`saferepr`, pure Python) took a third of
        the CPU of sending a task."""
        self.app.send_task(
            name,
            args,
            kwargs,
            argsrepr=repr(tuple(args if shown is None else shown))[:REPR_MAX],
            kwargsrepr=repr(kwargs or {})[:REPR_MAX],
            **options,
        )

    def warm_up(self) -> None:
        """Import and build what the first `send_task` would (the result backend, the message
        builder, the producer pool: about 85 ms), without connecting to the broker."""
        _ = self.app.backend, self.app.amqp.producer_pool.connections.connection.transport

    def open_connections(self) -> None:
        """Open the producer's and the event inbox's connections (a process's first send paid
        10 to 20 ms for them); after `warm_up`."""
        with self.app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)
        self.inbox.client.ping()

    def dispatch(self, batch_id: str, priority: int) -> None:
        self._send("batchcalls.dispatch", (batch_id,), priority=priority)

    def place_call(
        self,
        batch_id: str,
        call_id: str,
        priority: int,
        countdown: float = 0,
        reserved_at: float | None = None,
        granted_at: float | None = None,
        *,
        freed: bool = False,
    ) -> None:
        kwargs: dict[str, Any] = {
            k: v for k, v in (("reserved_at", reserved_at), ("granted_at", granted_at)) if v is not None
        }
        if freed:
            kwargs["freed"] = True
        self._send("batchcalls.place_call", (batch_id, call_id), kwargs, priority=priority, countdown=countdown or None)

    def place_calls(
        self,
        batch_id: str,
        call_ids: list[str],
        priority: int,
        granted_at: float | None = None,
        *,
        freed: bool = False,
    ) -> None:
        kwargs: dict[str, Any] = {"granted_at": granted_at} if granted_at is not None else {}
        if freed:
            kwargs["freed"] = True
        self._send("batchcalls.place_calls", (batch_id, call_ids), kwargs, priority=priority)

    def wake(self, batch_id: str, countdown: float) -> None:
        self._send("batchcalls.wake", (batch_id,), countdown=countdown, priority=0)

    def pace(self, countdown: float = 0) -> None:
        self._send("batchcalls.pace", (), countdown=countdown or None, priority=0)

    def deliver(self, batch_id: str, countdown: float = 0) -> None:
        self._send("batchcalls.deliver", (batch_id,), countdown=countdown or None, priority=3)

    def hang_up(self, batch_id: str, call_id: str, tries: int = 0, countdown: float = 0) -> None:
        kwargs = {"tries": tries} if tries else None
        self._send("batchcalls.hang_up", (batch_id, call_id), kwargs, countdown=countdown or None, priority=0)

    def leave_voicemail(self, call_id: str, attempt: int, provider_call_id: str) -> None:
        # At once: the machine has just beeped, and it records only for a while.
        self._send("batchcalls.leave_voicemail", (call_id, attempt, provider_call_id), priority=0)

    def expire(self, batch_id: str, countdown: float = 0) -> None:
        self._send("batchcalls.expire", (batch_id,), countdown=countdown or None, priority=0)

    def start(self, batch_id: str, countdown: float = 0) -> None:
        self._send("batchcalls.start", (batch_id,), countdown=countdown or None, priority=0)

    @functools.cached_property
    def inbox(self) -> Inbox:
        settings = self.app.settings
        # Retried over about two seconds, as kombu retries a publish: a Redis that restarts
        # would otherwise lose the events sent meanwhile (an entry sent twice is harmless).
        client = redis.Redis.from_url(
            settings.redis_url,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 6),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        return Inbox(client, settings.event_shards, self.drain_events)

    def drain_events(self, shard: int) -> None:
        self._send("batchcalls.drain_events", (shard,), priority=EVENT_PRIORITY)

    def recover_events(self) -> int:
        return self.inbox.sweep()

    def record_event(self, event: ProviderEvent, countdown: float = 0) -> None:
        """An event due now goes to the event inbox (workers/inbox.py), where the drains of its
        call's shard apply it after every event of the call added before it. A later one (only
        the simulator's scheduled events: a provider's webhooks are all due now) goes to a
        `record_event` task with a countdown, applied when it runs: see `SimulatorProvider` for
        why its order does not matter."""
        if countdown <= 0:
            self.inbox.put([event])
            return
        message = event.to_message()
        self._send(
            "batchcalls.record_event",
            (message,),
            shown=(shown_event(message),),
            countdown=countdown,
            priority=EVENT_PRIORITY,
        )

    def record_input(
        self, call_id: str, attempt: int, step: int, responses: list[dict[str, Any]], countdown: float = 0
    ) -> None:
        """The simulated callee's answers to an input step (a provider's arrive at its webhook):
        the task's repr counts them and does not show them."""
        self._send(
            "batchcalls.record_input",
            (call_id, attempt, step, responses),
            shown=(call_id, attempt, step, f"<{len(responses)} responses>"),
            countdown=countdown or None,
            priority=EVENT_PRIORITY,
        )

    def record_events(self, events: list[ProviderEvent], countdown: float = 0) -> None:
        """Events of one call due at the same instant, applied in order by one drain or task."""
        if countdown <= 0:
            self.inbox.put(events)
            return
        if len(events) == 1:
            self.record_event(events[0], countdown)
            return
        messages = [e.to_message() for e in events]
        self._send(
            "batchcalls.record_events",
            (messages,),
            shown=([shown_event(m) for m in messages],),
            countdown=countdown,
            priority=EVENT_PRIORITY,
        )


def shown_event(message: dict[str, Any]) -> dict[str, Any]:
    """An event message as its task's repr shows it: what the callee answered (speech, digits)
    counted, not shown."""
    if not message.get("responses"):
        return message
    return {**message, "responses": f"<{len(message['responses'])} responses>"}
