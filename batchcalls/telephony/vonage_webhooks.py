"""What Vonage tells us, in our terms: its call statuses mapped onto attempt states and outcomes
(one table), its event and input webhooks translated to `ProviderEvent`s and responses, the URLs
it is given for them, and the check of its signed webhooks.

Pure: no I/O. `api/provider_webhooks.py` serves the routes; `telephony/vonage.py` uses the same
table for `poll`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import jwt

from batchcalls.errors import Unauthorized
from batchcalls.models import ProviderEvent
from batchcalls.states import AttemptStatus, Outcome
from batchcalls.timefmt import isoformat_ms

log = logging.getLogger("batchcalls.vonage")

EVENT_PATH = "/webhooks/vonage/event"
INPUT_PATH = "/webhooks/vonage/input"
ANSWER_PATH = "/webhooks/vonage/answer"

# Every Vonage call status we act on. A status not here (`human`, `disconnected`, `transfer`,
# recording and error notices) changes nothing.
STATUSES: dict[str, tuple[AttemptStatus, Outcome | None]] = {
    "started": (AttemptStatus.RINGING, None),
    "ringing": (AttemptStatus.RINGING, None),
    "answered": (AttemptStatus.ANSWERED, None),
    "completed": (AttemptStatus.ENDED, Outcome.COMPLETED),
    # With machine_detection=hangup Vonage hangs up on a machine: the attempt ends here, and the
    # `completed` that follows is a repeated ending (a no-op).
    "machine": (AttemptStatus.ENDED, Outcome.MACHINE),
    "busy": (AttemptStatus.ENDED, Outcome.BUSY),
    "timeout": (AttemptStatus.ENDED, Outcome.NO_ANSWER),
    "unanswered": (AttemptStatus.ENDED, Outcome.NO_ANSWER),
    "rejected": (AttemptStatus.ENDED, Outcome.REJECTED),
    "failed": (AttemptStatus.ENDED, Outcome.FAILED),
    # "Cancelled by the originator before being answered": we are the originator, so this is our
    # own hangup (a cancelled batch, whose calls the control path ends itself) or something
    # Vonage did on our behalf; either way nobody was reached for a reason on our side.
    "cancelled": (AttemptStatus.ENDED, Outcome.FAILED),
}
# Endings that are not the callee's doing carry their status (and Vonage's `detail`) as the error.
_ERROR_STATUSES = frozenset({"failed", "rejected", "cancelled"})

# Vonage posts `machine` and then, at once, `completed` for the same call. Each webhook becomes a
# task, and two workers may run the two tasks in either order: applied first, `completed` would
# end the attempt as answered by a person and the `machine` behind it would change nothing (a
# voicemail counted as a success). So `completed` is applied this much later than it arrives;
# every other status at once. It holds the call's slot that long, about 3% of a 30 s call.
SETTLE_SECONDS = {"completed": 1.0}


def settle_seconds(status: object) -> float:
    """How long after its webhook an event with Vonage's `status` is applied."""
    return SETTLE_SECONDS.get(status, 0.0) if isinstance(status, str) else 0.0


def event_url(base_url: str, call_id: str, attempt: int) -> str:
    """Where Vonage posts the call's status events: our ids ride in the query, so every event
    names the attempt it is about, even one whose create request never answered."""
    return f"{base_url.rstrip('/')}{EVENT_PATH}?{urlencode({'call_id': call_id, 'attempt': attempt})}"


def input_url(base_url: str, call_id: str, attempt: int, step: int) -> str:
    """Where Vonage posts the result of the script's input step `step`."""
    query = urlencode({"call_id": call_id, "attempt": attempt, "step": step})
    return f"{base_url.rstrip('/')}{INPUT_PATH}?{query}"


def parse_timestamp(value: object) -> float | None:
    """Vonage's ISO 8601 time (`2020-01-01T12:00:00.000Z`) as Unix seconds, None if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def translate_status(
    status: str, call_id: str, attempt: int, at: float, provider_call_id: str | None, detail: str | None = None
) -> ProviderEvent | None:
    """Vonage's `status` of an attempt as our event, None for a status that changes nothing."""
    mapped = STATUSES.get(status)
    if mapped is None:
        return None
    attempt_status, outcome = mapped
    error = None
    if status in _ERROR_STATUSES:
        error = f"vonage: {status}" + (f" ({detail})" if detail else "")
    return ProviderEvent(call_id, attempt, attempt_status, at, outcome, provider_call_id, error=error)


def event_from_webhook(call_id: str, attempt: int, payload: Mapping[str, Any], now: float) -> ProviderEvent | None:
    """The event a status webhook reports, or None when it reports nothing we act on."""
    status = payload.get("status")
    if not isinstance(status, str):
        return None
    # The human/machine event names the call `call_uuid`; the others name it `uuid`.
    uuid = payload.get("uuid") or payload.get("call_uuid")
    at = parse_timestamp(payload.get("timestamp")) or now
    detail = payload.get("detail")
    return translate_status(status, call_id, attempt, at, uuid if isinstance(uuid, str) else None,
                            detail if isinstance(detail, str) else None)


def responses_from_input(
    payload: Mapping[str, Any], attempt: int, step: int, name: str | None, now: float
) -> list[dict[str, Any]]:
    """The response an input webhook carries, as stored on the call and shown in its `responses`:
    `{"id", "step", "name", "attempt", "digits", "speech": [{"text", "confidence"}], "timed_out",
    "at"}`. `id` (the Vonage call and the result's time) makes a repeated webhook recognisable."""
    dtmf = _mapping(payload.get("dtmf"))
    speech = _mapping(payload.get("speech"))
    results = []
    for result in speech.get("results") or []:
        if isinstance(result, Mapping) and isinstance(result.get("text"), str):
            results.append({"text": result["text"], "confidence": _float_or_none(result.get("confidence"))})
    digits = dtmf.get("digits")
    timestamp = payload.get("timestamp")
    at = parse_timestamp(timestamp) or now
    uuid = payload.get("uuid") or payload.get("call_uuid") or ""
    response = {
        "id": f"{uuid}:{step}:{timestamp or at}",
        "step": step,
        "name": name,
        "attempt": attempt,
        "digits": digits if isinstance(digits, str) and digits else None,
        "speech": results,
        "timed_out": bool(dtmf.get("timed_out")) or speech.get("timeout_reason") == "start_timeout",
        "at": isoformat_ms(datetime.fromtimestamp(at, tz=UTC)),
    }
    return [response]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _float_or_none(value: object) -> float | None:
    """Vonage sends confidences as strings ("0.94") or numbers."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def verify_signature(authorization: str | None, body: bytes, secret: str) -> dict[str, Any]:
    """The claims of a signed Vonage webhook, or `Unauthorized`.

    Vonage signs each webhook with a JWT (HS256, keyed with the account's signature secret) in
    `Authorization: Bearer <jwt>`; its `payload_hash` claim is the SHA-256 (hex) of the body.
    The SDK checks only the JWT: the hash is what ties the signature to this body, so a body
    without a matching hash is refused too."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("webhook is not signed: expected Authorization: Bearer <jwt>")
    try:
        claims: dict[str, Any] = jwt.decode(token.strip(), secret, algorithms=["HS256"])
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"webhook signature is not valid: {exc}") from exc
    claimed = claims.get("payload_hash")
    if claimed is None:
        if body:
            raise Unauthorized("webhook signature does not cover its body (no payload_hash)")
    elif not isinstance(claimed, str) or not hmac.compare_digest(
        claimed.lower(), hashlib.sha256(body).hexdigest()
    ):
        raise Unauthorized("webhook body does not match its signature's payload_hash")
    return claims
