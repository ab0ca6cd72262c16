"""What every part of the engine works with: its adapters, and the task queue it sends work to.

The engine never imports Celery: it reaches the task queue through the small `TaskQueue`
interface below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from batchcalls.adapters.gates import Gates, Grant
from batchcalls.adapters.metrics import Metrics
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.telephony.base import Provider
from batchcalls.domain.models import ProviderEvent
from config.settings import Settings


class TaskQueue(Protocol):
    def dispatch(self, batch_id: str, priority: int) -> None: ...
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
    ) -> None: ...
    def place_calls(
        self,
        batch_id: str,
        call_ids: list[str],
        priority: int,
        granted_at: float | None = None,
        *,
        freed: bool = False,
    ) -> None: ...
    def wake(self, batch_id: str, countdown: float) -> None: ...
    def pace(self, countdown: float = 0) -> None: ...
    def deliver(self, batch_id: str, countdown: float = 0) -> None: ...
    def record_event(self, event: ProviderEvent, countdown: float = 0) -> None: ...
    def record_events(self, events: list[ProviderEvent], countdown: float = 0) -> None: ...
    def recover_events(self) -> int: ...
    def hang_up(self, batch_id: str, call_id: str, tries: int = 0, countdown: float = 0) -> None: ...
    def leave_voicemail(self, call_id: str, attempt: int, provider_call_id: str) -> None: ...
    def expire(self, batch_id: str, countdown: float = 0) -> None: ...
    def start(self, batch_id: str, countdown: float = 0) -> None: ...


class EngineParts:
    """The engine's dependencies, declared once for the parts (`Engine` holds them as fields)."""

    settings: Settings
    db: Database
    gates: Gates
    tasks: TaskQueue
    provider: Provider | None
    metrics: Metrics | None

    if TYPE_CHECKING:
        # What the parts call of one another (`Engine` joins them), declared once here so that
        # mypy checks those calls.
        def dispatch(
            self,
            batch_id: str,
            release: list[str] | None = None,
            delay: list[tuple[str, int, float]] | None = None,
            *,
            place_here: bool = False,
        ) -> int: ...
        def _dispatch(
            self,
            batch_id: str,
            release: list[str] | None,
            delay: list[tuple[str, int, float]] | None,
            *,
            place_here: bool,
        ) -> tuple[int, str | None]: ...
        def place_call(
            self,
            call_id: str,
            reserved_at: float | None = None,
            granted_at: float | None = None,
            batch_id: str | None = None,
            *,
            freed: bool = False,
        ) -> None: ...
        def _check_expired(self, batch_id: str, call_ids: list[str]) -> None: ...
        def _schedule_wake(self, batch_id: str, due_in: float) -> None: ...
        def _join(self, batch_id: str, grant: Grant, released: list[str]) -> None: ...
        def record_event(self, event: ProviderEvent) -> str: ...
        def kick_delivery(self, batch_id: str, *, urgent: bool = False) -> None: ...
        def expire(self, batch_id: str) -> int: ...
