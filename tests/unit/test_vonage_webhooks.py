"""Vonage's statuses, webhooks and signatures in our terms (pure)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import jwt
import pytest

from batchcalls.adapters.telephony import vonage_webhooks as vw
from batchcalls.domain.errors import MalformedRequest, Unauthorized
from batchcalls.domain.states import AttemptStatus, Outcome

SECRET = "s" * 40
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "attempt_status", "outcome"),
    [
        ("started", AttemptStatus.RINGING, None),
        ("ringing", AttemptStatus.RINGING, None),
        ("answered", AttemptStatus.ANSWERED, None),
        ("completed", AttemptStatus.ENDED, Outcome.COMPLETED),
        ("machine", AttemptStatus.MACHINE, None),
        ("busy", AttemptStatus.ENDED, Outcome.BUSY),
        ("timeout", AttemptStatus.ENDED, Outcome.NO_ANSWER),
        ("unanswered", AttemptStatus.ENDED, Outcome.NO_ANSWER),
        ("rejected", AttemptStatus.ENDED, Outcome.REJECTED),
        ("failed", AttemptStatus.ENDED, Outcome.FAILED),
        ("cancelled", AttemptStatus.ENDED, Outcome.FAILED),
    ],
)
def test_each_vonage_status_maps_to_one_attempt_state_and_outcome(
    status: str, attempt_status: AttemptStatus, outcome: Outcome | None
) -> None:
    payload = {"status": status, "uuid": "u-1", "timestamp": "2027-01-15T07:59:58.250Z"}
    event = vw.event_from_webhook("call-1", 2, payload, NOW)
    assert event is not None
    assert (event.call_id, event.attempt, event.status, event.outcome) == ("call-1", 2, attempt_status, outcome)
    assert event.provider_call_id == "u-1"
    assert event.at == datetime(2027, 1, 15, 7, 59, 58, 250_000, tzinfo=UTC).timestamp() < NOW


@pytest.mark.parametrize("status", ["human", "disconnected", "transfer", None, 5])
def test_statuses_that_change_nothing_are_no_events(status: object) -> None:
    assert vw.event_from_webhook("call-1", 1, {"status": status, "uuid": "u"}, NOW) is None


def test_the_machine_event_names_the_call_call_uuid() -> None:
    event = vw.event_from_webhook("c", 1, {"status": "machine", "call_uuid": "u-9"}, NOW)
    assert event is not None and event.provider_call_id == "u-9" and event.status is AttemptStatus.MACHINE


def test_endings_not_of_the_callees_doing_carry_their_detail_as_error() -> None:
    rejected = vw.event_from_webhook("c", 1, {"status": "rejected", "detail": "invalid_number"}, NOW)
    assert rejected is not None and rejected.error == "vonage: rejected (invalid_number)"
    busy = vw.event_from_webhook("c", 1, {"status": "busy"}, NOW)
    assert busy is not None and busy.error is None


def test_a_timestamp_ahead_of_our_clock_is_taken_as_now() -> None:
    """A time in the future would put the attempt's end, and its retry, out of reach."""
    event = vw.event_from_webhook("c", 1, {"status": "busy", "timestamp": "9999-12-31T23:59:59.000Z"}, NOW)
    assert event is not None and event.at == NOW


def test_an_unreadable_timestamp_falls_back_to_now() -> None:
    event = vw.event_from_webhook("c", 1, {"status": "ringing", "timestamp": "yesterday"}, NOW)
    assert event is not None and event.at == NOW
    assert vw.parse_timestamp("2020-01-01 12:00:00") is None  # no zone: not trusted


EXTREME_TIMESTAMPS = (
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59+14:00",
    "9999-12-31T23:59:59.999999Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "1999-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z",
)


@pytest.mark.parametrize("timestamp", EXTREME_TIMESTAMPS)
def test_a_timestamp_outside_2000_to_2100_is_taken_as_now(timestamp: str) -> None:
    assert vw.parse_timestamp(timestamp) is None
    event = vw.event_from_webhook("c", 1, {"status": "busy", "timestamp": timestamp}, NOW)
    assert event is not None and event.at == NOW
    [response] = vw.responses_from_input({"uuid": "u", "dtmf": {"digits": "1"}, "timestamp": timestamp}, 1, 0, "q", NOW)
    assert response["at"] == vw.isoformat_ms(datetime.fromtimestamp(NOW, tz=UTC))


def test_timestamps_inside_2000_to_2100_are_read() -> None:
    assert vw.parse_timestamp("2000-01-01T00:00:00Z") == 946_684_800.0
    assert vw.parse_timestamp("2099-12-31T23:59:59+00:00") == 4_102_444_799.0
    assert vw.parse_timestamp("2020-01-01T12:00:00.000Z") == 1_577_880_000.0


KEY = vw.url_key(b"signature secret")


def test_webhook_urls_carry_our_ids_and_a_token_over_them() -> None:
    event_token = vw.url_token(KEY, "c-1", 3)
    input_token = vw.url_token(KEY, "c-1", 3, 2)
    assert vw.event_url("https://calls.example/", "c-1", 3, key=KEY) == (
        f"https://calls.example/webhooks/vonage/event?call_id=c-1&attempt=3&token={event_token}"
    )
    assert vw.input_url("https://calls.example", "c-1", 3, 2, key=KEY) == (
        f"https://calls.example/webhooks/vonage/input?call_id=c-1&attempt=3&step=2&token={input_token}"
    )


def test_a_url_token_fits_only_its_own_ids_and_key() -> None:
    token = vw.url_token(KEY, "c-1", 3, 2)
    assert vw.url_token_matches(KEY, token, "c-1", 3, 2)
    others = [
        vw.url_token(KEY, "c-2", 3, 2),
        vw.url_token(KEY, "c-1", 4, 2),
        vw.url_token(KEY, "c-1", 3, 3),
        vw.url_token(KEY, "c-1", 3),
        vw.url_token(vw.url_key(b"another secret"), "c-1", 3, 2),
    ]
    assert token not in others and len(set(others)) == len(others)
    assert not vw.url_token_matches(KEY, token, "c-2", 3, 2)
    assert not vw.url_token_matches(KEY, token, "c-1", 3)  # an input URL's token is no event URL's
    assert vw.url_key(b"signature secret") == KEY  # the same in every process


def test_parse_ids_reads_a_url_we_made() -> None:
    query = {"call_id": "c-1", "attempt": "3", "step": "12", "token": vw.url_token(KEY, "c-1", 3, 12)}
    ids = vw.parse_ids(query, with_step=True)
    assert ids == vw.WebhookIds("c-1", 3, 12, query["token"])
    vw.check_url_token(KEY, ids)
    with pytest.raises(Unauthorized):
        vw.check_url_token(KEY, ids._replace(call_id="c-2"))
    with pytest.raises(Unauthorized):
        vw.parse_ids({**query, "token": ""}, with_step=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("step", "\u00b2"),  # superscript two: a digit to str.isdigit, not to int()
        ("step", "\u0661"),  # Arabic-Indic one: int() takes it
        ("step", "\uff11"),  # fullwidth one
        ("step", ""),
        ("step", "-1"),
        ("step", "+1"),
        ("step", " 1"),
        ("step", "1\n"),
        ("step", "1e3"),
        ("step", "0x1"),
        ("step", "1" * 7),
        ("attempt", "0"),
        ("attempt", "\u00b2"),
        ("attempt", "1.0"),
        ("call_id", ""),
        ("call_id", "c\x001"),
        ("call_id", "c" * 65),
    ],
)
def test_malformed_ids_are_a_clear_error_naming_the_field(field: str, value: str) -> None:
    query = {"call_id": "c-1", "attempt": "1", "step": "1", "token": "0" * 32, field: value}
    with pytest.raises(MalformedRequest) as excinfo:
        vw.parse_ids(query, with_step=True)
    assert field in excinfo.value.details


def test_input_results_become_responses() -> None:
    payload = {
        "uuid": "u-1",
        "timestamp": "2027-01-15T08:00:00.250Z",
        "dtmf": {"digits": "42", "timed_out": False},
        "speech": {
            "timeout_reason": "end_on_silence_timeout",
            "results": [{"text": "yes please", "confidence": "0.94"}, {"text": "yes", "confidence": 0.5}],
        },
    }
    (response,) = vw.responses_from_input(payload, 2, 3, "interest", NOW)
    assert response == {
        "id": "u-1:3:2027-01-15T08:00:00.250Z",
        "step": 3,
        "name": "interest",
        "attempt": 2,
        "digits": "42",
        "speech": [{"text": "yes please", "confidence": 0.94}, {"text": "yes", "confidence": 0.5}],
        "timed_out": False,
        "at": "2027-01-15T08:00:00.250Z",
    }


def test_a_silent_callee_is_a_timed_out_response() -> None:
    (response,) = vw.responses_from_input({"uuid": "u", "dtmf": {"digits": "", "timed_out": True}}, 1, 0, None, NOW)
    assert response["timed_out"] is True and response["digits"] is None and response["speech"] == []
    (spoken,) = vw.responses_from_input({"uuid": "u", "speech": {"timeout_reason": "start_timeout"}}, 1, 0, None, NOW)
    assert spoken["timed_out"] is True


# --- signatures ------------------------------------------------------------------------------


def signed(body: bytes, secret: str = SECRET, **claims: object) -> str:
    payload = {"iat": int(NOW), "jti": "j", "iss": "Vonage", "payload_hash": hashlib.sha256(body).hexdigest(), **claims}
    return "Bearer " + jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


BODY = json.dumps({"status": "answered", "uuid": "u"}, separators=(",", ":")).encode()


def test_a_vonage_signature_over_the_body_is_accepted() -> None:
    claims = vw.verify_signature(signed(BODY), BODY, SECRET, now=NOW)
    assert claims["iss"] == "Vonage"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic abc",
        "Bearer ",
        "Bearer not-a-jwt",
        signed(BODY, secret="t" * 40),
        signed(BODY + b" "),
        signed(BODY, payload_hash="0" * 64),
        signed(BODY, payload_hash=None),
        signed(BODY, exp=int(NOW) - 60),
        "Bearer " + jwt.encode({"payload_hash": hashlib.sha256(BODY).hexdigest()}, None, algorithm="none"),
    ],
)
def test_unsigned_forged_and_tampered_webhooks_are_refused(authorization: str | None) -> None:
    with pytest.raises(Unauthorized):
        vw.verify_signature(authorization, BODY, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"iat": None}, "no issue time"),
        ({"iat": "1800000000"}, "no issue time"),
        ({"iat": float("nan")}, "no issue time"),
        ({"iat": True}, "no issue time"),
        ({"iat": int(NOW) - 5 * 365 * 86400}, "too old"),
        ({"iat": int(NOW) - vw.MAX_TOKEN_AGE_SECONDS - 1}, "too old"),
        ({"iat": int(NOW) + vw.CLOCK_SKEW_SECONDS + 1}, "future"),
        ({"jti": None}, "no token id"),
        ({"jti": ""}, "no token id"),
        ({"jti": 7}, "no token id|must be a string"),
    ],
)
def test_old_future_and_unidentified_tokens_are_refused(claims: dict[str, object], why: str) -> None:
    """A captured token cannot be replayed for years: it must be young and carry a `jti`,
    which the API takes once."""
    with pytest.raises(Unauthorized, match=why):
        vw.verify_token(signed(BODY, **claims), SECRET, now=NOW)


def test_a_token_is_taken_within_its_age_and_a_small_clock_skew() -> None:
    for issued in (NOW - vw.MAX_TOKEN_AGE_SECONDS + 1, NOW + vw.CLOCK_SKEW_SECONDS - 1):
        assert vw.verify_token(signed(BODY, iat=int(issued)), SECRET, now=NOW)["jti"] == "j"
    assert vw.REPLAY_TTL_SECONDS > vw.MAX_TOKEN_AGE_SECONDS + vw.CLOCK_SKEW_SECONDS


def test_the_replay_mark_is_one_key_per_token_id() -> None:
    assert vw.replay_key({"jti": "a"}) == vw.replay_key({"jti": "a"}) != vw.replay_key({"jti": "b"})
    assert vw.replay_key({"jti": "a" * 200}).startswith("bc:") and len(vw.replay_key({"jti": "a" * 200})) < 64


def test_a_bodiless_request_needs_no_payload_hash() -> None:
    vw.verify_signature(signed(b"", payload_hash=None), b"", SECRET, now=NOW)
