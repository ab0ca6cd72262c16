"""The engine's TaskQueue on Celery: every task is sent by name, so senders need no task code."""

from __future__ import annotations

from typing import Any

from celery import Celery

from batchcalls.engine import EVENT_PRIORITY
from batchcalls.models import ProviderEvent


class CeleryTaskQueue:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def dispatch(self, batch_id: str, priority: int) -> None:
        self.app.send_task("batchcalls.dispatch", (batch_id,), priority=priority)

    def place_call(self, batch_id: str, call_id: str, priority: int, countdown: float = 0,
                   reserved_at: float | None = None, granted_at: float | None = None,
                   freed: bool = False) -> None:
        kwargs: dict[str, Any] = {k: v for k, v in (("reserved_at", reserved_at), ("granted_at", granted_at))
                                  if v is not None}
        if freed:
            kwargs["freed"] = True
        self.app.send_task("batchcalls.place_call", (batch_id, call_id), kwargs, priority=priority,
                           countdown=countdown or None)

    def place_calls(self, batch_id: str, call_ids: list[str], priority: int,
                    granted_at: float | None = None, freed: bool = False) -> None:
        kwargs: dict[str, Any] = {"granted_at": granted_at} if granted_at is not None else {}
        if freed:
            kwargs["freed"] = True
        self.app.send_task("batchcalls.place_calls", (batch_id, call_ids), kwargs, priority=priority)

    def wake(self, batch_id: str, countdown: float) -> None:
        self.app.send_task("batchcalls.wake", (batch_id,), countdown=countdown, priority=0)

    def deliver(self, batch_id: str, countdown: float = 0) -> None:
        self.app.send_task("batchcalls.deliver", (batch_id,), countdown=countdown or None, priority=3)

    def record_event(self, event: ProviderEvent, countdown: float = 0) -> None:
        self.app.send_task("batchcalls.record_event", (event.to_message(),),
                           countdown=countdown or None, priority=EVENT_PRIORITY)

    def record_events(self, events: list[ProviderEvent], countdown: float = 0) -> None:
        """Events of one call due at the same instant, applied in order by one task."""
        if len(events) == 1:
            self.record_event(events[0], countdown)
            return
        self.app.send_task("batchcalls.record_events", ([e.to_message() for e in events],),
                           countdown=countdown or None, priority=EVENT_PRIORITY)

    def record_responses(self, call_id: str, attempt: int, responses: list[dict[str, Any]]) -> None:
        self.app.send_task("batchcalls.record_responses", (call_id, attempt, responses), priority=1)
