"""Vonage's statuses, webhooks and signatures in our terms (pure)."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime

import jwt
import pytest

from batchcalls.errors import Unauthorized
from batchcalls.states import AttemptStatus, Outcome
from batchcalls.telephony import vonage_webhooks as vw

SECRET = "s" * 40
NOW = 1_800_000_000.0


@pytest.mark.parametrize(("status", "attempt_status", "outcome"), [
    ("started", AttemptStatus.RINGING, None),
    ("ringing", AttemptStatus.RINGING, None),
    ("answered", AttemptStatus.ANSWERED, None),
    ("completed", AttemptStatus.ENDED, Outcome.COMPLETED),
    ("machine", AttemptStatus.ENDED, Outcome.MACHINE),
    ("busy", AttemptStatus.ENDED, Outcome.BUSY),
    ("timeout", AttemptStatus.ENDED, Outcome.NO_ANSWER),
    ("unanswered", AttemptStatus.ENDED, Outcome.NO_ANSWER),
    ("rejected", AttemptStatus.ENDED, Outcome.REJECTED),
    ("failed", AttemptStatus.ENDED, Outcome.FAILED),
    ("cancelled", AttemptStatus.ENDED, Outcome.FAILED),
])
def test_each_vonage_status_maps_to_one_attempt_state_and_outcome(
    status: str, attempt_status: AttemptStatus, outcome: Outcome | None
) -> None:
    payload = {"status": status, "uuid": "u-1", "timestamp": "2027-01-15T08:00:00.250Z"}
    event = vw.event_from_webhook("call-1", 2, payload, NOW)
    assert event is not None
    assert (event.call_id, event.attempt, event.status, event.outcome) == ("call-1", 2, attempt_status, outcome)
    assert event.provider_call_id == "u-1"
    assert event.at == datetime(2027, 1, 15, 8, 0, 0, 250_000, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("status", ["human", "disconnected", "transfer", None, 5])
def test_statuses_that_change_nothing_are_no_events(status: object) -> None:
    assert vw.event_from_webhook("call-1", 1, {"status": status, "uuid": "u"}, NOW) is None


def test_the_machine_event_names_the_call_call_uuid() -> None:
    event = vw.event_from_webhook("c", 1, {"status": "machine", "call_uuid": "u-9"}, NOW)
    assert event is not None and event.provider_call_id == "u-9" and event.outcome is Outcome.MACHINE


def test_endings_not_of_the_callees_doing_carry_their_detail_as_error() -> None:
    rejected = vw.event_from_webhook("c", 1, {"status": "rejected", "detail": "invalid_number"}, NOW)
    assert rejected is not None and rejected.error == "vonage: rejected (invalid_number)"
    busy = vw.event_from_webhook("c", 1, {"status": "busy"}, NOW)
    assert busy is not None and busy.error is None


def test_an_unreadable_timestamp_falls_back_to_now() -> None:
    event = vw.event_from_webhook("c", 1, {"status": "ringing", "timestamp": "yesterday"}, NOW)
    assert event is not None and event.at == NOW
    assert vw.parse_timestamp("2020-01-01 12:00:00") is None  # no zone: not trusted


def test_webhook_urls_carry_our_ids() -> None:
    assert vw.event_url("https://calls.example/", "c-1", 3) == (
        "https://calls.example/webhooks/vonage/event?call_id=c-1&attempt=3")
    assert vw.input_url("https://calls.example", "c-1", 3, 2) == (
        "https://calls.example/webhooks/vonage/input?call_id=c-1&attempt=3&step=2")


def test_input_results_become_responses() -> None:
    payload = {"uuid": "u-1", "timestamp": "2027-01-15T08:00:00.250Z",
               "dtmf": {"digits": "42", "timed_out": False},
               "speech": {"timeout_reason": "end_on_silence_timeout",
                          "results": [{"text": "yes please", "confidence": "0.94"}, {"text": "yes", "confidence": 0.5}]}}
    (response,) = vw.responses_from_input(payload, 2, 3, "interest", NOW)
    assert response == {
        "id": "u-1:3:2027-01-15T08:00:00.250Z", "step": 3, "name": "interest", "attempt": 2, "digits": "42",
        "speech": [{"text": "yes please", "confidence": 0.94}, {"text": "yes", "confidence": 0.5}],
        "timed_out": False, "at": "2027-01-15T08:00:00.250Z",
    }


def test_a_silent_callee_is_a_timed_out_response() -> None:
    (response,) = vw.responses_from_input({"uuid": "u", "dtmf": {"digits": "", "timed_out": True}}, 1, 0, None, NOW)
    assert response["timed_out"] is True and response["digits"] is None and response["speech"] == []
    (spoken,) = vw.responses_from_input({"uuid": "u", "speech": {"timeout_reason": "start_timeout"}}, 1, 0, None, NOW)
    assert spoken["timed_out"] is True


# --- signatures ------------------------------------------------------------------------------


def signed(body: bytes, secret: str = SECRET, **claims: object) -> str:
    payload = {"iat": int(time.time()), "jti": "j", "iss": "Vonage",
               "payload_hash": hashlib.sha256(body).hexdigest(), **claims}
    return "Bearer " + jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


BODY = json.dumps({"status": "answered", "uuid": "u"}, separators=(",", ":")).encode()


def test_a_vonage_signature_over_the_body_is_accepted() -> None:
    claims = vw.verify_signature(signed(BODY), BODY, SECRET)
    assert claims["iss"] == "Vonage"


@pytest.mark.parametrize("authorization", [
    None,
    "",
    "Basic abc",
    "Bearer ",
    "Bearer not-a-jwt",
    signed(BODY, secret="t" * 40),
    signed(BODY + b" "),
    signed(BODY, payload_hash="0" * 64),
    signed(BODY, payload_hash=None),
    signed(BODY, exp=int(time.time()) - 60),
    "Bearer " + jwt.encode({"payload_hash": hashlib.sha256(BODY).hexdigest()}, None, algorithm="none"),
])
def test_unsigned_forged_and_tampered_webhooks_are_refused(authorization: str | None) -> None:
    with pytest.raises(Unauthorized):
        vw.verify_signature(authorization, BODY, SECRET)


def test_a_bodiless_request_needs_no_payload_hash() -> None:
    vw.verify_signature(signed(b"", payload_hash=None), b"", SECRET)


@pytest.mark.parametrize("status", sorted(set(vw.STATUSES) - {"completed"}))
def test_only_completed_waits_so_a_machine_verdict_just_before_it_wins(status: str) -> None:
    """`machine` arrives just before `completed`; the two become tasks that may run in either
    order, so `completed` is applied later and finds the attempt already ended as a machine."""
    assert vw.settle_seconds(status) == 0.0
    assert vw.settle_seconds("completed") >= 0.5
    assert vw.settle_seconds(None) == 0.0
