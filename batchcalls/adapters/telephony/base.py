"""The provider interface. Adapters translate to and from it; nothing provider-specific leaks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from batchcalls.domain.models import ProviderEvent


@dataclass(frozen=True)
class DialRequest:
    """One attempt to place: who to call, what to say, and how the provider reports back."""

    call_id: str
    attempt: int
    phone_number: str
    script: dict[str, Any]
    voice_id: str | None
    voicemail: str | None = None  # the message to leave after a machine's beep; None: hang up on a machine


@dataclass(frozen=True)
class LiveAttempt:
    """What the store knows of an attempt that has not ended, for `Provider.poll`."""

    call_id: str
    attempt: int
    phone_number: str
    status: str
    provider_call_id: str | None
    dialed_at: float


class Provider(Protocol):
    name: str

    def create_call(self, request: DialRequest) -> str:
        """Ask the provider to place the call; return its call id.

        Raises ProviderError: `definite=True` when the provider certainly placed no call
        (`throttled=True` for a rate limit answer), `definite=False` when it may have."""

    def poll(self, attempt: LiveAttempt) -> ProviderEvent | None:
        """The provider's current view of an attempt whose events stopped, or None if unknown."""

    def hangup(self, call_id: str, attempt: int, provider_call_id: str) -> None:
        """End a live call (attempt `attempt` of `call_id`); its end arrives as its `ended` event.
        Raises ProviderError when the provider refused."""

    def leave_voicemail(self, provider_call_id: str, text: str, voice_id: str | None) -> bool:
        """Speak `text` on the live call `provider_call_id`, whose machine has just beeped; the
        call ends after it. False when the call is already over. Raises ProviderError when the
        provider refused. (The simulator leaves its messages itself, when it plans the call.)"""
