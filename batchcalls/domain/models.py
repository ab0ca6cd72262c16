"""Plain data passed between the core, the adapters and the tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from batchcalls.domain.retry import RetryPolicy
from batchcalls.domain.states import AttemptStatus, Outcome
from batchcalls.domain.window_spec import CallingWindow

if TYPE_CHECKING:  # call_lists reads lifecycle, which reads this module
    from batchcalls.domain.call_lists import Skip

DEFAULT_PRIORITY = 5
DEFAULT_CONCURRENCY = 10


@dataclass(frozen=True)
class NewCall:
    """A validated call of a submitted batch. `script` is normalised: `{"type", "steps": [...]}`,
    with the call's `variables` filled into its texts."""

    phone_number: str
    script: dict[str, Any]
    voice_id: str | None
    priority: int
    calling_window: CallingWindow | None = None  # its own, replacing the batch's
    metadata: dict[str, Any] | None = None  # the caller's own, echoed in the call's views and events
    variables: dict[str, Any] | None = None  # already filled into `script`; kept for the record
    voicemail: dict[str, str] | None = None  # its own (`domain.voicemail`), replacing the batch's
    # Not dialed (`invalid_numbers: skip`): stored final, its number as given when not valid.
    skipped: Skip | None = None

    @property
    def script_type(self) -> str | None:
        value = self.script.get("type")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class NewBatch:
    calls: tuple[NewCall, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    callback_url: str | None = None
    priority: int = DEFAULT_PRIORITY
    metadata: dict[str, Any] | None = None
    expires_at: datetime | None = None  # aware; calls not placed by then end `expired`
    start_at: datetime | None = None  # aware; nothing is dialed before it (the batch is `scheduled`)
    calling_window: CallingWindow | None = None  # when its calls may be dialed (a call may have its own)
    voicemail: dict[str, str] | None = None  # what its calls do on a machine (`domain.voicemail`)

    def window_of(self, call: NewCall) -> CallingWindow | None:
        return call.calling_window if call.calling_window is not None else self.calling_window


@dataclass(frozen=True)
class ProviderEvent:
    """A provider's report on one attempt, translated to our terms by its adapter.

    `status` is how far the attempt got; `outcome` is set only when `status` is `ended`.
    `at` is the provider's time of the change (Unix seconds).
    """

    call_id: str
    attempt: int
    status: AttemptStatus
    at: float
    outcome: Outcome | None = None
    provider_call_id: str | None = None
    error: str | None = None
    responses: list[dict[str, Any]] | None = None
    voicemail_left: bool = False  # the provider left the call's voicemail message on the machine

    def __post_init__(self) -> None:
        if (self.status is AttemptStatus.ENDED) != (self.outcome is not None):
            raise ValueError("an outcome is given exactly when the attempt has ended")

    def to_message(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "attempt": self.attempt,
            "status": self.status.value,
            "at": self.at,
            "outcome": self.outcome.value if self.outcome else None,
            "provider_call_id": self.provider_call_id,
            "error": self.error,
            "responses": self.responses,
            "voicemail_left": self.voicemail_left,
        }

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> ProviderEvent:
        return cls(
            call_id=data["call_id"],
            attempt=int(data["attempt"]),
            status=AttemptStatus(data["status"]),
            at=float(data["at"]),
            outcome=Outcome(data["outcome"]) if data.get("outcome") else None,
            provider_call_id=data.get("provider_call_id"),
            error=data.get("error"),
            responses=data.get("responses"),
            voicemail_left=bool(data.get("voicemail_left")),
        )
