"""What Vonage tells us, in our terms: its call statuses mapped onto attempt states and outcomes
(one table), its event and input webhooks translated to `ProviderEvent`s and responses, the URLs
it is given for them (each with a token binding its ids), and the checks of its webhooks: the
URL token here, the signature JWT (young, with a `jti`, over the body) in `vonage_signatures`.

Pure: no I/O. `api/provider_webhooks.py` serves the routes; `telephony/vonage.py` uses the same
table for `poll`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlencode

from batchcalls.adapters.telephony.ncco import BEEP_STARTED

# The signature checks, which the routes and tests read here.
from batchcalls.adapters.telephony.vonage_signatures import CLOCK_SKEW_SECONDS as CLOCK_SKEW_SECONDS
from batchcalls.adapters.telephony.vonage_signatures import MAX_TOKEN_AGE_SECONDS as MAX_TOKEN_AGE_SECONDS
from batchcalls.adapters.telephony.vonage_signatures import REPLAY_TTL_SECONDS as REPLAY_TTL_SECONDS
from batchcalls.adapters.telephony.vonage_signatures import check_payload_hash as check_payload_hash
from batchcalls.adapters.telephony.vonage_signatures import replay_key as replay_key
from batchcalls.adapters.telephony.vonage_signatures import verify_signature as verify_signature
from batchcalls.adapters.telephony.vonage_signatures import verify_token as verify_token
from batchcalls.domain.errors import MalformedRequest, Unauthorized
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import AttemptStatus, Outcome
from batchcalls.domain.timefmt import isoformat_ms

log = logging.getLogger("batchcalls.vonage")

EVENT_PATH = "/webhooks/vonage/event"
INPUT_PATH = "/webhooks/vonage/input"
ANSWER_PATH = "/webhooks/vonage/answer"

# Vonage's webhook bodies are a few hundred bytes; anything far larger is not Vonage's.
MAX_BODY_BYTES = 64 * 1024
# The URL token's key is derived from the fleet's secret with this label (see `url_key`).
URL_KEY_LABEL = b"batchcalls vonage webhook url v1"
URL_TOKEN_CHARS = 32  # 128 bits, hex
_TOKEN = re.compile(f"[0-9a-f]{{{URL_TOKEN_CHARS}}}")
_NUMBER = re.compile(r"[0-9]{1,6}")  # ASCII digits only
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Every Vonage call status we act on. A status not here (`human`, `disconnected`, `transfer`,
# recording and error notices) changes nothing.
STATUSES: dict[str, tuple[AttemptStatus, Outcome | None]] = {
    "started": (AttemptStatus.RINGING, None),
    "ringing": (AttemptStatus.RINGING, None),
    "answered": (AttemptStatus.ANSWERED, None),
    "completed": (AttemptStatus.ENDED, Outcome.COMPLETED),
    # A machine answered: the attempt is `machine` (still live, its slot held) until the call's
    # `completed`, which ends it `machine` (`lifecycle`). With machine_detection=hangup Vonage
    # hangs up at once and `completed` follows; a call with a voicemail message (advanced machine
    # detection, `continue`) stays up: the beep (`machine` again, `sub_state: beep_start`) is a
    # repeat that asks for the message (`beep_of`), and `completed` comes after the message.
    "machine": (AttemptStatus.MACHINE, None),
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


def url_key(material: bytes) -> bytes:
    """The key of the tokens in our webhook URLs, derived from a secret every process of the fleet
    already holds (`VONAGE_SIGNATURE_SECRET`, else the application's private key): no new setting
    to keep in step, and a URL token tells nothing about the secret it came from."""
    return hmac.new(material, URL_KEY_LABEL, hashlib.sha256).digest()


def url_token(key: bytes, call_id: str, attempt: int, step: int | None = None) -> str:
    """The token that binds one webhook URL to its attempt (and input step): without the key
    nobody can make the URL of another call, attempt or step."""
    kind = "event" if step is None else f"input\x00{step}"
    message = f"{kind}\x00{call_id}\x00{attempt}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:URL_TOKEN_CHARS]


def url_token_matches(key: bytes, token: str, call_id: str, attempt: int, step: int | None = None) -> bool:
    return hmac.compare_digest(token.encode(), url_token(key, call_id, attempt, step).encode())


def event_url(base_url: str, call_id: str, attempt: int, *, key: bytes) -> str:
    """Where Vonage posts the call's status events: our ids ride in the query, so every event
    names the attempt it is about, even one whose create request never answered; the token
    binds them to the URL we gave."""
    query = urlencode({"call_id": call_id, "attempt": attempt, "token": url_token(key, call_id, attempt)})
    return f"{base_url.rstrip('/')}{EVENT_PATH}?{query}"


def input_url(base_url: str, call_id: str, attempt: int, step: int, *, key: bytes) -> str:
    """Where Vonage posts the result of the script's input step `step`."""
    query = urlencode(
        {"call_id": call_id, "attempt": attempt, "step": step, "token": url_token(key, call_id, attempt, step)}
    )
    return f"{base_url.rstrip('/')}{INPUT_PATH}?{query}"


class WebhookIds(NamedTuple):
    """What a webhook URL we gave Vonage names: our call, its attempt, the input step (input
    webhooks only) and the token over them."""

    call_id: str
    attempt: int
    step: int | None
    token: str


def parse_ids(query: Mapping[str, str], *, with_step: bool) -> WebhookIds:
    """The ids of a webhook URL's query, strictly: numbers in ASCII decimal digits only (`²` is
    a digit to `str.isdigit`, not to `int`). Raises `MalformedRequest` naming the field."""
    call_id = query.get("call_id", "")
    if not _CALL_ID.fullmatch(call_id):
        raise MalformedRequest("call_id is not a call id", {"call_id": ["is not a call id"]})
    numbers = {}
    for name in ("attempt", "step") if with_step else ("attempt",):
        raw = query.get(name, "")
        if not _NUMBER.fullmatch(raw):
            raise MalformedRequest(
                f"{name} must be a number in decimal digits", {name: ["must be a number in decimal digits"]}
            )
        numbers[name] = int(raw)
    if numbers["attempt"] < 1:
        raise MalformedRequest("attempt must be at least 1", {"attempt": ["must be at least 1"]})
    token = query.get("token", "")
    if not _TOKEN.fullmatch(token):
        raise Unauthorized("webhook URL has no valid token")
    return WebhookIds(call_id, numbers["attempt"], numbers.get("step"), token)


def check_url_token(key: bytes, ids: WebhookIds) -> None:
    """`Unauthorized` unless the URL's token is the one we made for its ids."""
    if not url_token_matches(key, ids.token, ids.call_id, ids.attempt, ids.step):
        raise Unauthorized("webhook URL token does not match its ids")


# Times a webhook may carry, in Unix seconds: 2000-01-01 to 2100-01-01 UTC. A time outside them
# is nobody's real call, and one before 1970 or past 9999 in UTC (year 1 at +14:00) makes
# `datetime.fromtimestamp` raise.
EARLIEST_TIMESTAMP = 946_684_800.0
LATEST_TIMESTAMP = 4_102_444_800.0


def parse_timestamp(value: object) -> float | None:
    """Vonage's ISO 8601 time (`2020-01-01T12:00:00.000Z`) as Unix seconds; None (the caller
    uses now) if unreadable, without a zone, or outside 2000..2100 UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        at = parsed.timestamp() if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None
    if at is None or not EARLIEST_TIMESTAMP <= at < LATEST_TIMESTAMP:
        return None
    return at


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
    # A time ahead of ours would put the attempt's end, and so its retry, in the future (the
    # store also keeps it after the attempt was dialed).
    at = min(parse_timestamp(payload.get("timestamp")) or now, now)
    detail = payload.get("detail")
    return translate_status(
        status,
        call_id,
        attempt,
        at,
        uuid if isinstance(uuid, str) else None,
        detail if isinstance(detail, str) else None,
    )


def beep_of(payload: Mapping[str, Any]) -> str | None:
    """The Vonage call whose machine has just beeped (advanced machine detection reports it as
    `status: machine` with `sub_state: beep_start`), or None for any other event."""
    if payload.get("status") != "machine" or payload.get("sub_state") != BEEP_STARTED:
        return None
    uuid = payload.get("call_uuid") or payload.get("uuid")
    return uuid if isinstance(uuid, str) and uuid else None


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
