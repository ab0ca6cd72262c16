"""Choose and build the configured provider (one per worker process)."""

from __future__ import annotations

from typing import Any, Protocol

from batchcalls.adapters.telephony.base import Provider
from batchcalls.adapters.telephony.chaos import Chaos, ChaoticSchedule, Schedule
from batchcalls.adapters.telephony.simulator import SimulatorProvider
from batchcalls.domain.errors import ConfigurationError
from batchcalls.domain.models import ProviderEvent
from config.settings import Settings


class EventSink(Protocol):
    def record_event(self, event: ProviderEvent, countdown: float = 0) -> None: ...
    def record_events(self, events: list[ProviderEvent], countdown: float = 0) -> None: ...
    def record_input(
        self, call_id: str, attempt: int, step: int, responses: list[dict[str, Any]], countdown: float = 0
    ) -> None: ...


def make_provider(settings: Settings, sink: EventSink) -> Provider:
    if settings.provider == "simulator":
        schedule: Schedule = lambda event, delay: sink.record_event(event, countdown=max(delay, 0))  # noqa: E731
        if settings.sim_chaos:
            schedule = ChaoticSchedule(schedule, Chaos.parse(settings.sim_chaos))
        return SimulatorProvider(
            schedule=schedule,
            ring_seconds=settings.sim_ring_seconds,
            call_seconds=settings.sim_call_seconds,
            log_path=settings.sim_log,
            # Chaos misbehaves event by event; without it, events due together travel together.
            schedule_many=None
            if settings.sim_chaos
            else (lambda events, delay: sink.record_events(events, countdown=max(delay, 0))),
            send_input=lambda call_id, attempt, step, responses, delay: sink.record_input(
                call_id, attempt, step, responses, countdown=max(delay, 0)
            ),
        )
    if settings.provider == "vonage":
        # Imported here: the SDK is only loaded by processes that use it. Raises
        # ConfigurationError now (a missing setting, a bad key), not on the first call.
        from batchcalls.adapters.telephony.vonage import make_vonage_provider

        return make_vonage_provider(settings)
    raise ConfigurationError(f"provider {settings.provider!r} is not available yet")
