"""Batchcalls on Vonage, end to end: real worker processes (three), the API over HTTP, and a local
fake of the Vonage Voice API over HTTPS (tests/fakes/vonage.py) that checks the SDK's JWT on
every request and plays each call back to our webhooks as signed events.

The stack here has its own database and Redis database (so its broker is not the simulator
stack's), and `BATCHCALLS_PROVIDER=vonage` with `VONAGE_CPS=3`.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jwt
import pytest
import redis
import requests
from kombu.exceptions import OperationalError
from vonage import Auth, HttpClientOptions, Vonage
from vonage_voice.models import CreateCallRequest, Phone, Talk, ToPhone

from batchcalls.adapters.redis_keys import event_drain_flag, event_stream
from batchcalls.adapters.telephony import vonage_webhooks as vw
from batchcalls.adapters.telephony.base import DialRequest
from batchcalls.adapters.telephony.vonage import load_private_key, make_vonage_provider, pkcs8_pem, webhook_url_key
from batchcalls.domain.errors import ProviderError
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.voices import voice_catalog
from batchcalls.engine import EVENT_PRIORITY
from config.settings import load_settings
from tests.fakes.vonage import (
    Application,
    FakeVonage,
    compact,
    iso,
    make_application,
    make_certificate,
    sign_webhook,
)
from tests.integration.conftest import Api
from tests.integration.test_pipeline import number, ts
from tests.support import servers as test_servers
from tests.support.stack import ROOT, Stack, start_stack
from workers.celery_app import create_celery
from workers.inbox import Entry, shard_of

pytestmark = pytest.mark.integration

FROM = "+447700900001"
CPS = 3


@dataclass
class VonageStack:
    stack: Stack
    fake: FakeVonage
    application: Application

    def submit(self, body: dict[str, Any]) -> str:
        return str(self.stack.submit(body)["batch_id"])

    def call(self, batch_id: str) -> dict[str, Any]:
        (call,) = self.stack.all_calls(batch_id)
        return call

    def post(self, url: str, body: bytes, authorization: str | None) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        return requests.post(url, data=body, headers=headers, timeout=10)

    def signed(self, body: bytes) -> str:
        return "Bearer " + sign_webhook(body, self.application.signature_secret, self.application.application_id)

    @property
    def key(self) -> bytes:
        """The URL tokens' key, as the API and the workers derive it from the signature secret."""
        return vw.url_key(self.application.signature_secret.encode())

    def event_url(self, call_id: str, attempt: int) -> str:
        return vw.event_url(self.stack.api_url, call_id, attempt, key=self.key)

    def call_status(self, call: dict[str, Any]) -> str | None:
        """The fake Vonage call's status (`completed` once Vonage ended it)."""
        found = self.fake.call_of(call["id"], 1)
        return None if found is None else found.status

    def input_url(self, call_id: str, attempt: int, step: int) -> str:
        return vw.input_url(self.stack.api_url, call_id, attempt, step, key=self.key)

    def silent_call(self, phone: str, body: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """A batch of one call that Vonage created and then never reports on: only the test's
        own webhooks talk. (batch id, the call once its Vonage uuid is known)"""
        self.fake.silent.add(phone)
        batch_id = self.submit({"calls": [{"phone_number": phone, "script": TYPED}], **(body or {})})
        call = wait_for(
            lambda: (c := self.call(batch_id))["attempts"] and c["attempts"][0]["provider_call_id"] and c,
            30,
            "the call was created at Vonage",
        )
        return batch_id, call


def vonage_env(fake: FakeVonage, application: Application, cert: Path) -> dict[str, str]:
    return {
        "BATCHCALLS_PROVIDER": "vonage",
        "VONAGE_API_HOST": fake.host,
        "VONAGE_CA_BUNDLE": str(cert),
        "VONAGE_APPLICATION_ID": application.application_id,
        "VONAGE_PRIVATE_KEY": application.private_key_env,  # PKCS#1, one line with literal \n
        "VONAGE_SIGNATURE_SECRET": application.signature_secret,
        "VONAGE_FROM_NUMBER": FROM,
        "VONAGE_CPS": str(CPS),
        # Ask Vonage (poll) after 1.5 s of silence; give an unconfirmed attempt up after 6 s.
        "BATCHCALLS_STALE_ATTEMPT_SECONDS": "1.5",
    }


@pytest.fixture(scope="module")
def vonage(servers: test_servers.TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VonageStack]:
    tmp = Path(tmp_path_factory.mktemp("vonage"))
    application = make_application()
    cert, key = make_certificate(tmp / "tls")
    fake = FakeVonage(application, cert, key, cps=CPS, ring_seconds=0.2, action_seconds=0.1)
    try:
        with test_servers.more_test_servers(servers) as own:
            stack = start_stack(
                own.database_url, own.redis_url, tmp / "stack", workers=3, **vonage_env(fake, application, cert)
            )
            try:
                yield VonageStack(stack, fake, application)
            finally:
                stack.stop()
    finally:
        fake.stop()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s")


def digits(phone: str) -> str:
    return phone.lstrip("+")


TYPED = {
    "type": "survey",
    "steps": [
        {"text": "Hello, this is Acme calling about your order."},
        {
            "type": "input",
            "dtmf": {"max_digits": 1, "timeout": 5},
            "speech": {"context": ["yes", "no"]},
            "name": "interest",
        },
        {"text": "Thank you. Connecting you to our assistant."},
        {"type": "agent", "url": "wss://agent.example/voice", "headers": {"lead_id": "L-42"}},
        {"text": "Anything else? Say it after the tone."},
        {"type": "input", "speech": {"end_on_silence": 1.0}, "name": "comment"},
        {"text": "Goodbye."},
    ],
}


# --- scripts, voices and responses --------------------------------------------------------------


def test_scripts_render_to_ncco_in_each_voice_and_inputs_become_responses(vonage: VonageStack) -> None:
    catalog = voice_catalog()
    voices = sorted(catalog)
    body = {
        "calls": [
            {"phone_number": number(100 + i, 0), "script": {"text": f"Hello from {v}."}, "voice_id": v}
            for i, v in enumerate(voices)
        ]
        + [
            {"phone_number": number(150, 0), "script": TYPED, "voice_id": "voice_male_2"},
            {"phone_number": number(151, 0), "script": {"text": "Hello in the default voice."}},
        ],
        "concurrency": 20,
    }
    batch_id = vonage.submit(body)
    final = vonage.stack.wait_finished(batch_id, timeout=90)
    assert final["status"] == "completed" and final["completed_calls"] == len(body["calls"])
    calls = {c["phone_number"]: c for c in vonage.stack.all_calls(batch_id)}
    api = vonage.stack.api_url

    for i, voice in enumerate(voices):
        call = calls[number(100 + i, 0)]
        (create,) = vonage.fake.creates_for(call["id"])
        assert create.answer == "created"
        assert create.body == {
            "ncco": [
                {
                    "action": "talk",
                    "text": f"Hello from {voice}.",
                    "language": catalog[voice]["language"],
                    "style": catalog[voice]["style"],
                }
            ],
            "to": [{"type": "phone", "number": digits(call["phone_number"])}],
            "from": {"type": "phone", "number": digits(FROM)},
            "event_url": [
                f"{api}/webhooks/vonage/event?call_id={call['id']}&attempt=1"
                f"&token={vw.url_token(vonage.key, call['id'], 1)}"
            ],
            "event_method": "POST",
            "machine_detection": "hangup",
        }
        assert call["attempts"][0]["provider_call_id"] == create.uuid
    (plain,) = vonage.fake.creates_for(calls[number(151, 0)]["id"])
    assert plain.body is not None and plain.body["ncco"] == [{"action": "talk", "text": "Hello in the default voice."}]

    typed = calls[number(150, 0)]
    fake_call = vonage.fake.call_of(typed["id"], 1)
    assert fake_call is not None
    first, after_interest, after_comment = fake_call.nccos
    voice = {"language": "en-GB", "style": 4}
    print(
        "\nNCCO of the create:",
        json.dumps(first),
        "\nafter input 1:",
        json.dumps(after_interest),
        "\nafter input 5:",
        json.dumps(after_comment),
    )
    assert first == [
        {"action": "talk", "text": "Hello, this is Acme calling about your order.", **voice, "bargeIn": True},
        {
            "action": "input",
            "type": ["dtmf", "speech"],
            "dtmf": {"maxDigits": 1, "timeOut": 5},
            "speech": {"language": "en-GB", "context": ["yes", "no"], "saveAudio": False},
            "eventUrl": [vonage.input_url(typed["id"], 1, 1)],
            "eventMethod": "POST",
        },
    ]
    assert after_interest == [
        {"action": "talk", "text": "Thank you. Connecting you to our assistant.", **voice},
        {
            "action": "connect",
            "from": digits(FROM),
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": "wss://agent.example/voice",
                    "content-type": "audio/l16;rate=16000",
                    "headers": {"lead_id": "L-42"},
                }
            ],
        },
        {"action": "talk", "text": "Anything else? Say it after the tone.", **voice, "bargeIn": True},
        {
            "action": "input",
            "type": ["speech"],
            "speech": {"endOnSilence": 1.0, "language": "en-GB"},
            "eventUrl": [vonage.input_url(typed["id"], 1, 5)],
            "eventMethod": "POST",
        },
    ]
    assert after_comment == [{"action": "talk", "text": "Goodbye.", **voice}]

    def typed_call() -> dict[str, Any]:
        (found,) = [c for c in vonage.stack.all_calls(batch_id) if c["id"] == typed["id"]]
        return found

    responses = wait_for(lambda: len(r := typed_call()["responses"]) == 2 and r, 10, "two responses")
    print("responses:", json.dumps(responses))
    interest, comment = responses
    assert interest["step"] == 1 and interest["name"] == "interest" and interest["attempt"] == 1
    assert interest["digits"] == "1" and interest["speech"] == [] and interest["timed_out"] is False
    assert comment["step"] == 5 and comment["name"] == "comment" and comment["digits"] is None
    assert comment["speech"] == [
        {"text": "yes please", "confidence": 0.9405097},
        {"text": "yes pleases", "confidence": 0.51},
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", comment["at"])

    # Vonage repeats a webhook it thinks was lost (signed again): the same input result and
    # status event are taken again and change nothing.
    inputs = [w for w in vonage.fake.webhooks if w.kind == "input" and typed["id"] in w.url]
    answered = [
        w
        for w in vonage.fake.webhooks
        if w.kind == "event" and typed["id"] in w.url and w.payload["status"] == "answered"
    ]
    assert len(inputs) == 2 and all(w.status == 200 for w in inputs)
    for sent in [*inputs, *answered]:
        again = vonage.post(sent.url, sent.body, vonage.signed(sent.body))
        assert again.status_code in (200, 204)
    vonage.stack.wait_inbox_applied()  # the repeats were taken in: once applied, they can change nothing more
    again_call = typed_call()
    assert again_call["responses"] == responses
    assert again_call["status"] == "completed" and again_call["attempts"] == typed["attempts"]


# --- outcomes and retries ------------------------------------------------------------------------


# last digit -> (what the fake's Vonage reports, the attempts' outcomes with the retry_config below)
OUTCOMES = {
    0: ("answered, completed", ["completed"]),
    1: ("busy", ["busy", "busy"]),
    2: ("timeout", ["no_answer", "no_answer"]),
    3: ("failed", ["failed", "failed"]),
    4: ("busy, then answered", ["busy", "completed"]),
    5: ("answered, machine", ["machine", "machine"]),
    6: ("rejected", ["rejected"]),  # not in retry_on: one attempt
    7: ("unanswered", ["no_answer", "no_answer"]),
    8: ("cancelled", ["failed", "failed"]),
}


def test_every_vonage_outcome_is_mapped_and_retried_per_retry_config(vonage: VonageStack) -> None:
    body = {
        "calls": [{"phone_number": number(200 + d, d), "script": {"text": "Hi"}} for d in OUTCOMES],
        "concurrency": 9,
        "retry_config": {"max_attempts": 2, "delay": 0.5, "retry_on": ["busy", "no_answer", "failed", "machine"]},
    }
    once = {"calls": [{"phone_number": number(220, 1), "script": {"text": "Hi"}}]}  # no retry_config: one attempt
    batch_id, once_id = vonage.submit(body), vonage.submit(once)
    final = vonage.stack.wait_finished(batch_id, timeout=90)
    assert final["status"] == "completed"
    assert (final["completed_calls"], final["failed_calls"]) == (2, 7)
    print()
    for call in sorted(vonage.stack.all_calls(batch_id), key=lambda c: c["phone_number"]):
        digit = int(call["phone_number"][-1])
        reported, outcomes = OUTCOMES[digit]
        attempts = call["attempts"]
        statuses = [
            [
                w.payload["status"]
                for w in vonage.fake.webhooks
                if w.kind == "event" and f"call_id={call['id']}&attempt={a['number']}" in w.url
            ]
            for a in attempts
        ]
        print(f"  digit {digit}: Vonage {statuses} -> outcomes {[a['outcome'] for a in attempts]}")
        assert [a["outcome"] for a in attempts] == outcomes, (digit, statuses)
        assert call["outcome"] == outcomes[-1]
        assert call["status"] == ("completed" if outcomes[-1] == "completed" else "failed")
        for previous, following in zip(attempts, attempts[1:]):
            assert ts(following["dialed_at"]) - ts(previous["ended_at"]) >= 0.5
        for attempt, fake_statuses in zip(attempts, statuses):
            (create,) = [c for c in vonage.fake.creates_for(call["id"]) if c.ids == (call["id"], attempt["number"])]
            assert attempt["provider_call_id"] == create.uuid
            assert fake_statuses[0] == "started"
    rejected = [c for c in vonage.stack.all_calls(batch_id) if c["phone_number"].endswith("6")][0]
    assert rejected["last_error"] == "vonage: rejected (declined)"
    once_final = vonage.stack.wait_finished(once_id)
    assert once_final["status"] == "failed"
    assert [a["outcome"] for a in vonage.call(once_id)["attempts"]] == ["busy"]


def test_a_voicemail_message_is_left_after_the_beep_by_a_transfer_and_the_outcome_stays_machine(
    vonage: VonageStack,
) -> None:
    message = "Hello, this is Acme. Please call us back on 0800 000 000."
    body = {
        "calls": [
            {"phone_number": number(400, 5), "script": {"text": "Hi"}},
            {"phone_number": number(401, 5), "script": {"text": "Hi"}, "voicemail": {"action": "hangup"}},
            {"phone_number": number(402, 0), "script": {"text": "Hi there"}},
        ],
        "voicemail": {"action": "leave_message", "text": message},
    }
    batch_id = vonage.submit(body)
    final = vonage.stack.wait_finished(batch_id, timeout=60)
    assert (final["completed_calls"], final["failed_calls"]) == (1, 2)
    calls = {c["phone_number"]: c for c in vonage.stack.all_calls(batch_id)}
    leaves, hangs_up, person = calls[number(400, 5)], calls[number(401, 5)], calls[number(402, 0)]
    beep_detection = {"behavior": "continue", "mode": "default", "beep_timeout": 45}

    (create,) = vonage.fake.creates_for(leaves["id"])
    assert create.body is not None and create.body["advanced_machine_detection"] == beep_detection
    assert "machine_detection" not in create.body
    fake_call = vonage.fake.call_of(leaves["id"], 1)
    assert fake_call is not None
    events = [
        (w.payload["status"], w.payload.get("sub_state"))
        for w in vonage.fake.webhooks
        if w.kind == "event" and f"call_id={leaves['id']}&" in w.url
    ]
    assert ("machine", "beep_start") in events
    # The message is spoken after the beep: the call was transferred to an NCCO that says it.
    wait_for(lambda: fake_call.transfers, 20, "the transfer after the beep")
    assert fake_call.transfers == [[{"action": "talk", "text": message}]]
    assert events.index(("machine", "beep_start")) > events.index(("machine", None))

    def voicemail_left() -> dict[str, Any] | None:
        (call,) = [c for c in vonage.stack.all_calls(batch_id) if c["id"] == leaves["id"]]
        return call if call["attempts"][0]["voicemail_left"] else None

    left = wait_for(voicemail_left, 20, "voicemail_left recorded on the attempt")
    assert left["outcome"] == "machine" and left["status"] == "failed"
    assert [(a["outcome"], a["voicemail_left"]) for a in left["attempts"]] == [("machine", True)]

    # A call's own `hangup` replaces its batch's leave_message: today's machine detection, no transfer.
    (plain,) = vonage.fake.creates_for(hangs_up["id"])
    assert plain.body is not None and plain.body["machine_detection"] == "hangup"
    assert "advanced_machine_detection" not in plain.body
    plain_call = vonage.fake.call_of(hangs_up["id"], 1)
    assert plain_call is not None and plain_call.transfers == []
    assert [(a["outcome"], a["voicemail_left"]) for a in hangs_up["attempts"]] == [("machine", False)]

    # A person hears the script; nothing is transferred.
    (human,) = vonage.fake.creates_for(person["id"])
    assert human.body is not None and human.body["advanced_machine_detection"] == beep_detection
    human_call = vonage.fake.call_of(person["id"], 1)
    assert human_call is not None and human_call.transfers == []
    assert person["outcome"] == "completed" and person["attempts"][0]["voicemail_left"] is False


# --- signatures ----------------------------------------------------------------------------------


def token(vonage: VonageStack, body: bytes, **claims: Any) -> str:
    """A webhook JWT signed with the application's secret, with claims changed (None: left out)."""
    payload = {
        **jwt.decode(
            sign_webhook(body, vonage.application.signature_secret, vonage.application.application_id),
            options={"verify_signature": False},
        ),
        **claims,
    }
    return "Bearer " + jwt.encode(
        {k: v for k, v in payload.items() if v is not None}, vonage.application.signature_secret, algorithm="HS256"
    )


def test_forged_unsigned_and_stale_webhooks_get_401_and_change_nothing(vonage: VonageStack) -> None:
    phone = number(300, 0)
    batch_id, before = vonage.silent_call(phone)
    call_id, uuid = before["id"], before["attempts"][0]["provider_call_id"]
    api = vonage.stack.api_url
    completed = compact(
        {
            "from": digits(FROM),
            "to": digits(phone),
            "uuid": uuid,
            "conversation_uuid": "CON-x",
            "status": "completed",
            "direction": "outbound",
            "timestamp": "2030-01-01T00:00:00.000Z",
        }
    )
    answer = compact(
        {"uuid": uuid, "dtmf": {"digits": "9", "timed_out": False}, "timestamp": "2030-01-01T00:00:01.000Z"}
    )
    other_secret = "Bearer " + sign_webhook(completed, "x" * 64, vonage.application.application_id)
    unsigned_alg = "Bearer " + jwt.encode(
        {"payload_hash": hashlib.sha256(completed).hexdigest()}, None, algorithm="none"
    )
    now = int(time.time())

    def forgeries(body: bytes) -> dict[str, str | None]:
        return {
            "no Authorization": None,
            "not a JWT": "Bearer forged",
            "signed with another secret": other_secret,
            "signature of another body": vonage.signed(compact({"status": "ringing", "uuid": uuid})),
            "no payload_hash": token(vonage, body, payload_hash=None),
            "alg none": unsigned_alg,
            "five years old": token(vonage, body, iat=now - 5 * 365 * 86400),
            "ten minutes old": token(vonage, body, iat=now - 600),
            "issued in an hour": token(vonage, body, iat=now + 3600),
            "no iat": token(vonage, body, iat=None),
            "no jti": token(vonage, body, jti=None),
        }

    for name, authorization in forgeries(completed).items():
        response = vonage.post(vonage.event_url(call_id, 1), completed, authorization)
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthorized"
    for name, authorization in forgeries(answer).items():
        response = vonage.post(vonage.input_url(call_id, 1, 1), answer, authorization)
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthorized"
    answer_url = f"{api}/webhooks/vonage/answer?uuid={uuid}"
    assert requests.get(answer_url, timeout=10).status_code == 401
    assert (
        requests.get(answer_url, headers={"Authorization": token(vonage, b"", payload_hash=None)}, timeout=10).json()
        == []
    )

    # Genuinely signed bodies on URLs we did not give Vonage: the token binds the URL's ids.
    event_base, input_base = f"{api}{vw.EVENT_PATH}", f"{api}{vw.INPUT_PATH}"
    wrong_urls = {  # name: (event URL, input URL for step 1)
        "no token": (f"{event_base}?call_id={call_id}&attempt=1", f"{input_base}?call_id={call_id}&attempt=1&step=1"),
        "another call's token": (
            f"{event_base}?call_id={call_id}&attempt=1&token={vw.url_token(vonage.key, 'another-call', 1)}",
            f"{input_base}?call_id={call_id}&attempt=1&step=1&token={vw.url_token(vonage.key, 'another-call', 1, 1)}",
        ),
        "attempt 2's token": (
            vonage.event_url(call_id, 2).replace("attempt=2", "attempt=1"),
            vonage.input_url(call_id, 2, 1).replace("attempt=2", "attempt=1"),
        ),
        "step 5's token": (
            vonage.event_url(call_id, 1) + "x",
            vonage.input_url(call_id, 1, 5).replace("step=5", "step=1"),
        ),
        "the other route's token": (
            f"{event_base}?call_id={call_id}&attempt=1&token={vw.url_token(vonage.key, call_id, 1, 1)}",
            f"{input_base}?call_id={call_id}&attempt=1&step=1&token={vw.url_token(vonage.key, call_id, 1)}",
        ),
        "a token of another key": (
            vw.event_url(api, call_id, 1, key=vw.url_key(b"guessed")),
            vw.input_url(api, call_id, 1, 1, key=vw.url_key(b"guessed")),
        ),
    }
    for name, (event_url, input_url) in wrong_urls.items():
        response = vonage.post(event_url, completed, vonage.signed(completed))
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthorized"
        response = vonage.post(input_url, answer, vonage.signed(answer))
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthorized"

    # A genuinely signed event about another Vonage call, replayed against this call's URL, is
    # taken by the endpoint (the signature covers the body, not the URL) but changes nothing.
    replayed = compact(
        {
            "from": digits(FROM),
            "to": digits(phone),
            "uuid": "another-call-uuid",
            "conversation_uuid": "CON-y",
            "status": "completed",
            "direction": "outbound",
            "timestamp": "2030-01-01T00:00:00.000Z",
        }
    )
    assert vonage.post(vonage.event_url(call_id, 1), replayed, vonage.signed(replayed)).status_code == 204

    # Webhooks signed with the application's secret, on the URLs Vonage was given, are taken:
    # the call ends as they say (rejected, with the one answer "7"), not as any forgery said.
    genuine_answer = compact(
        {"uuid": uuid, "dtmf": {"digits": "7", "timed_out": False}, "timestamp": "2030-01-01T00:00:01.000Z"}
    )
    rejected = compact(
        {"uuid": uuid, "status": "rejected", "detail": "declined", "timestamp": "2030-01-01T00:00:02.000Z"}
    )
    assert (
        vonage.post(vonage.input_url(call_id, 1, 1), genuine_answer, vonage.signed(genuine_answer)).status_code == 200
    )
    assert vonage.post(vonage.event_url(call_id, 1), rejected, vonage.signed(rejected)).status_code == 204
    final = vonage.stack.wait_finished(batch_id, timeout=30)
    assert final["status"] == "failed" and final["failed_calls"] == 1  # its one call failed
    after = wait_for(lambda: (c := vonage.call(batch_id))["responses"] and c, 10, "the genuine response")
    assert after["outcome"] == "rejected" and [r["digits"] for r in after["responses"]] == ["7"]


# --- calls per second ----------------------------------------------------------------------------


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most creations in any half-open window [t, t + window)."""
    times = sorted(times)
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t < start + window))
    return best


def test_three_workers_never_exceed_three_creates_per_second_and_keep_close_to_it(vonage: VonageStack) -> None:
    total = 36
    body = {
        "calls": [{"phone_number": number(400 + i, 0), "script": {"text": f"Hi {i}"}} for i in range(total)],
        "concurrency": total,
    }
    batch_id = vonage.submit(body)
    final = vonage.stack.wait_finished(batch_id, timeout=120)
    assert final["completed_calls"] == total
    ids = {c["id"] for c in vonage.stack.all_calls(batch_id)}
    requests_ = [c for c in vonage.fake.creates if c.ids is not None and c.ids[0] in ids]
    created = sorted(c.at for c in requests_ if c.answer == "created")
    throttled = [c for c in requests_ if c.answer == "throttled"]
    span = created[-1] - created[0]
    # The first CPS creations open the first window; every later one needs a new slot.
    rate = (len(created) - CPS) / span
    peak = max_in_window([c.at for c in requests_])
    per_worker = {}
    for log_file in sorted(vonage.stack.log_dir.glob("w*.log")):
        text = log_file.read_text(errors="replace")
        per_worker[log_file.stem] = sum(
            1 for line in text.splitlines() if "dialing call_id=" in line and any(i in line for i in ids)
        )
    print(
        f"\n{len(created)} creates in {span:.2f}s: {rate:.2f}/s after the first window; busiest one-second"
        f" window {peak} (limit {CPS}); 429s {len(throttled)}; dials per worker {per_worker}"
    )
    assert len(created) == total
    timeline = [f"{c.at - created[0]:.3f} {c.answer}" for c in sorted(requests_, key=lambda c: c.at)]
    assert peak <= CPS, timeline
    # The best the gate allows is CPS / (1 s + 30 ms tolerance + 50 ms Vonage margin) = 2.78/s.
    assert rate >= 0.8 * CPS, rate
    assert len([n for n in per_worker.values() if n]) == 3, per_worker


def test_a_429_puts_the_attempt_back_to_wait_and_does_not_fail_it(vonage: VonageStack) -> None:
    vonage.fake.throttle_creates(2)
    batch_id = vonage.submit({"calls": [{"phone_number": number(500, 0), "script": {"text": "Hi"}}]})
    final = vonage.stack.wait_finished(batch_id, timeout=30)
    assert final["status"] == "completed"
    call = vonage.call(batch_id)
    assert [a["outcome"] for a in call["attempts"]] == ["completed"]
    answers = [c.answer for c in vonage.fake.creates_for(call["id"])]
    assert answers == ["throttled", "throttled", "created"]


# --- at most one call per attempt ------------------------------------------------------------------


def test_a_create_dropped_before_vonage_placed_it_is_given_up_not_redialed(vonage: VonageStack) -> None:
    vonage.fake.drop_creates(1, placed=False)
    batch_id = vonage.submit(
        {
            "calls": [{"phone_number": number(600, 0), "script": {"text": "Hi"}}],
            "retry_config": {"max_attempts": 2, "delay": 0.5, "retry_on": ["failed"]},
        }
    )
    final = vonage.stack.wait_finished(batch_id, timeout=60)
    call = vonage.call(batch_id)
    first, second = call["attempts"]
    assert first["outcome"] == "failed" and first["provider_call_id"] is None
    assert second["outcome"] == "completed" and final["status"] == "completed"
    assert [(c.ids, c.answer) for c in vonage.fake.creates_for(call["id"])] == [
        ((call["id"], 1), "dropped"),
        ((call["id"], 2), "created"),
    ]
    print(
        f"\nattempt 1 given up {ts(first['ended_at']) - ts(first['dialed_at']):.1f}s after its dropped create;"
        f" last_error {call['last_error']!r}"
    )


def test_a_create_dropped_after_vonage_placed_it_is_resolved_by_its_events(vonage: VonageStack) -> None:
    vonage.fake.drop_creates(1, placed=True)
    batch_id = vonage.submit(
        {
            "calls": [{"phone_number": number(610, 0), "script": {"text": "Hi"}}],
            "retry_config": {"max_attempts": 2, "delay": 0.5, "retry_on": ["failed"]},
        }
    )
    final = vonage.stack.wait_finished(batch_id, timeout=60)
    call = vonage.call(batch_id)
    (attempt,) = call["attempts"]
    (create,) = vonage.fake.creates_for(call["id"])
    assert create.answer == "dropped" and create.uuid is not None
    assert attempt["outcome"] == "completed" and final["status"] == "completed"
    assert attempt["provider_call_id"] == create.uuid  # learnt from the `started` event, not the create


def test_lost_webhooks_are_recovered_by_polling_vonage(vonage: VonageStack) -> None:
    phone = number(620, 0)
    vonage.fake.lost_events.add(phone)
    batch_id = vonage.submit({"calls": [{"phone_number": phone, "script": {"text": "Hi"}}]})
    final = vonage.stack.wait_finished(batch_id, timeout=60)
    call = vonage.call(batch_id)
    assert final["status"] == "completed" and [a["outcome"] for a in call["attempts"]] == ["completed"]
    uuid = call["attempts"][0]["provider_call_id"]
    assert not [w for w in vonage.fake.webhooks if call["id"] in w.url]
    assert ("GET", f"/v1/calls/{uuid}", 200) in vonage.fake.requests


def test_no_attempt_was_ever_created_twice(vonage: VonageStack) -> None:
    """Across every test above: each (call, attempt) reached Vonage in one request, apart from
    requests Vonage refused with 429 (which created nothing)."""
    keys = collections.Counter(c.ids for c in vonage.fake.creates if c.answer != "throttled")
    assert keys and max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]


def test_cancel_with_hangup_puts_a_hangup_to_vonage_for_each_live_call(vonage: VonageStack) -> None:
    phones = [number(640 + i, 0) for i in range(2)]
    vonage.fake.silent.update(phones)  # live until hung up
    batch_id = vonage.submit(
        {"calls": [{"phone_number": p, "script": {"text": "Hi"}} for p in phones + [number(642, 0)]], "concurrency": 2}
    )

    def uuids() -> list[str] | None:
        found = [a["provider_call_id"] for c in vonage.stack.all_calls(batch_id) for a in c["attempts"]]
        return found if len(found) == 2 and all(found) else None

    live = wait_for(uuids, 30, "both calls created at Vonage")
    answer = requests.post(
        f"{vonage.stack.api_url}/v1/batches/{batch_id}/cancel",
        json={"hangup_live_calls": True},
        headers=vonage.stack.headers(),
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    final = vonage.stack.wait_finished(batch_id, timeout=30)
    assert final["status"] == "cancelled" and final["cancelled_calls"] == 3
    # The fake answers 204 only to `{"action": "hangup"}` on a live call it knows.
    wait_for(
        lambda: {("PUT", f"/v1/calls/{u}", 204) for u in live} <= set(vonage.fake.requests),
        30,
        "a hangup PUT for each live call",
    )
    assert all(vonage.fake.calls[u].hung_up for u in live)
    assert {c["outcome"] for c in vonage.stack.all_calls(batch_id)} == {"cancelled"}
    assert len(vonage.fake.creates_for(vonage.stack.all_calls(batch_id)[2]["id"])) == 0


def test_a_callee_who_presses_the_opt_out_is_suppressed_and_vonage_is_told_to_end_the_call(
    vonage: VonageStack,
) -> None:
    opting, staying = number(650, 0), number(651, 0)
    vonage.fake.pressed[digits(opting)] = "9"
    script = {
        "steps": [
            {"text": "Press 1 for more, or 9 never to be called again."},
            {"type": "input", "dtmf": {"max_digits": 1}, "name": "choice", "opt_out": {"digits": "9"}},
            {"text": "Thank you."},
        ]
    }
    batch_id = vonage.submit({"calls": [{"phone_number": p, "script": script} for p in (opting, staying)]})
    final = vonage.stack.wait_finished(batch_id, timeout=60)
    assert (final["completed_calls"], final["failed_calls"]) == (1, 1)
    calls = {c["phone_number"]: c for c in vonage.stack.all_calls(batch_id)}
    opted = calls[opting]
    assert (opted["status"], opted["outcome"]) == ("failed", "opted_out")
    assert [(r["name"], r["digits"]) for r in opted["responses"]] == [("choice", "9")]
    # The input webhook answered an empty NCCO, so Vonage ended the call there; the other callee
    # pressed 1 and heard the rest of the script.
    inputs = {w.url: w for w in vonage.fake.webhooks if w.kind == "input"}
    assert inputs[vonage.input_url(opted["id"], 1, 1)].answer == []
    assert inputs[vonage.input_url(calls[staying]["id"], 1, 1)].answer[0]["text"] == "Thank you."
    ended = vonage.fake.call_of(opted["id"], 1)
    assert ended is not None and ended.nccos[1:] == [[]]
    wait_for(lambda: vonage.call_status(opted) == "completed", 30, "Vonage's call ended")
    listed = requests.get(
        f"{vonage.stack.api_url}/v1/suppressions",
        params={"phone_number": opting},
        headers=vonage.stack.headers(),
        timeout=30,
    ).json()["suppressions"]
    assert [s["phone_number"] for s in listed] == [opting]
    later = vonage.stack.submit({"calls": [{"phone_number": opting, "script": script}]})
    assert later["failed_calls"] == 1
    (again,) = vonage.stack.all_calls(later["batch_id"])
    assert again["outcome"] == "suppressed" and not vonage.fake.creates_for(again["id"])


# --- replays, other calls, provider times (after the timing tests: these leave calls live) ----------


def test_a_replayed_signed_webhook_is_refused_and_reveals_nothing(vonage: VonageStack) -> None:
    phone = number(310, 0)
    batch_id, call = vonage.silent_call(phone)
    uuid = call["attempts"][0]["provider_call_id"]
    answer = compact(
        {"uuid": uuid, "dtmf": {"digits": "3", "timed_out": False}, "timestamp": "2030-01-01T00:00:01.000Z"}
    )
    authorization = vonage.signed(answer)
    first = vonage.post(vonage.input_url(call["id"], 1, 1), answer, authorization)
    assert first.status_code == 200 and first.json()[0]["action"] == "talk"  # the script's next part
    again = vonage.post(vonage.input_url(call["id"], 1, 1), answer, authorization)
    assert again.status_code == 401 and again.json()["error"]["code"] == "unauthorized"
    assert "jti" in again.json()["error"]["message"]
    event = compact({"uuid": uuid, "status": "busy", "timestamp": "2030-01-01T00:00:02.000Z"})
    authorization = vonage.signed(event)
    assert vonage.post(vonage.event_url(call["id"], 1), event, authorization).status_code == 204
    assert vonage.post(vonage.event_url(call["id"], 1), event, authorization).status_code == 401
    vonage.stack.wait_finished(batch_id, timeout=30)
    assert [r["digits"] for r in wait_for(lambda: vonage.call(batch_id)["responses"], 10, "the response")] == ["3"]


def test_an_input_result_of_another_vonage_call_gets_no_script(vonage: VonageStack) -> None:
    """A captured signed input webhook of call A, replayed with call B's id, gets nothing: A's URL
    token does not fit B's ids, and even on B's own URL A's uuid is not B's Vonage call."""
    (batch_a, a), (batch_b, b) = vonage.silent_call(number(320, 0)), vonage.silent_call(number(321, 0))
    captured = compact(
        {
            "uuid": a["attempts"][0]["provider_call_id"],
            "dtmf": {"digits": "1", "timed_out": False},
            "timestamp": "2030-01-01T00:00:01.000Z",
        }
    )
    a_url = vonage.input_url(a["id"], 1, 1)
    response = vonage.post(a_url.replace(a["id"], b["id"]), captured, vonage.signed(captured))
    assert response.status_code == 401
    response = vonage.post(vonage.input_url(b["id"], 1, 1), captured, vonage.signed(captured))
    assert response.status_code == 200 and response.json() == []
    # B's own result is answered with B's script, and is the only response B holds.
    own = compact(
        {
            "uuid": b["attempts"][0]["provider_call_id"],
            "dtmf": {"digits": "2", "timed_out": False},
            "timestamp": "2030-01-01T00:00:02.000Z",
        }
    )
    response = vonage.post(vonage.input_url(b["id"], 1, 1), own, vonage.signed(own))
    assert response.status_code == 200 and response.json()[0]["text"] == "Thank you. Connecting you to our assistant."
    busy = compact({"uuid": b["attempts"][0]["provider_call_id"], "status": "busy"})
    assert vonage.post(vonage.event_url(b["id"], 1), busy, vonage.signed(busy)).status_code == 204
    vonage.stack.wait_finished(batch_b, timeout=30)
    assert [r["digits"] for r in wait_for(lambda: vonage.call(batch_b)["responses"], 10, "B's response")] == ["2"]
    assert vonage.call(batch_a)["responses"] == []


def test_a_provider_time_far_ahead_or_behind_cannot_move_a_retry(vonage: VonageStack) -> None:
    """A `busy` dated in the year 9999 would have put the retry out of reach, one dated 2001 would
    have made it due at once: the attempt's end is kept between its dial and now."""
    retry = {"retry_config": {"max_attempts": 2, "delay": 1, "retry_on": ["busy"]}}
    batch_id, call = vonage.silent_call(number(330, 0), retry)
    future = compact(
        {"uuid": call["attempts"][0]["provider_call_id"], "status": "busy", "timestamp": "9999-12-31T23:59:59.000Z"}
    )
    assert vonage.post(vonage.event_url(call["id"], 1), future, vonage.signed(future)).status_code == 204
    retried = wait_for(lambda: len((c := vonage.call(batch_id))["attempts"]) == 2 and c, 30, "the retry dialed")
    first = retried["attempts"][0]
    assert ts(first["dialed_at"]) <= ts(first["ended_at"]) <= time.time()

    later = {"retry_config": {"max_attempts": 2, "delay": 600, "retry_on": ["busy"]}}
    batch_id, call = vonage.silent_call(number(331, 0), later)
    past = compact(
        {"uuid": call["attempts"][0]["provider_call_id"], "status": "busy", "timestamp": "2001-01-01T00:00:00.000Z"}
    )
    assert vonage.post(vonage.event_url(call["id"], 1), past, vonage.signed(past)).status_code == 204
    scheduled = wait_for(lambda: (c := vonage.call(batch_id))["status"] == "scheduled" and c, 30, "the retry scheduled")
    first = scheduled["attempts"][0]
    assert ts(first["ended_at"]) >= ts(first["dialed_at"])
    assert ts(scheduled["next_attempt_at"]) >= ts(first["dialed_at"]) + 600


DRAIN_LAG_SECONDS = 3.0


def _inbox_statuses(client: redis.Redis, shard: int, call_id: str) -> list[str]:
    """The statuses of the call's events waiting in its inbox shard, in stream order."""
    statuses = []
    for _, fields in cast(list[Entry], client.xrange(event_stream(shard))):
        for message in json.loads(fields[b"e"]):
            if message["call_id"] == call_id:
                statuses.append(ProviderEvent.from_message(message).status.value)
    return statuses


def test_machine_then_completed_ends_as_machine_however_late_the_drain_runs(vonage: VonageStack) -> None:
    """Vonage posts `machine` and, right after it, `completed`. The call's inbox shard has a drain
    queued that runs only 3 s later (its flag is held as a queued drain holds it): nothing may
    apply `completed` before `machine` meanwhile, and the call ends as a machine."""
    batch_id, call = vonage.silent_call(number(360, 5))
    call_id, uuid = call["id"], call["attempts"][0]["provider_call_id"]
    settings = load_settings(vonage.stack.env)
    shard = shard_of(call_id, settings.event_shards)
    client = redis.Redis.from_url(settings.redis_url)
    held = b"a drain queued behind other work"
    wait_for(  # once no drain of the shard is queued or running
        lambda: client.set(event_drain_flag(shard), held, nx=True, ex=60),
        10,
        "the shard's drain flag taken",
    )
    try:
        now = time.time()
        machine = compact({"call_uuid": uuid, "status": "machine", "timestamp": iso(now)})
        completed = compact({"uuid": uuid, "status": "completed", "timestamp": iso(now + 0.05)})
        for body in (machine, completed):
            assert vonage.post(vonage.event_url(call_id, 1), body, vonage.signed(body)).status_code == 204
        posted = time.time()
        wait_for(
            lambda: (
                _inbox_statuses(client, shard, call_id) == ["machine", "ended"]
                or vonage.call(batch_id)["status"] in ("completed", "failed")
            ),
            10,
            "both events in the call's inbox shard, or the call ended",
        )
        # The drain comes through the broker late, as one queued behind other work does: a
        # countdown the workers keep, not a wait in this test.
        create_celery(settings).send_task(
            "batchcalls.drain_events",
            (shard,),
            countdown=max(0.0, posted + DRAIN_LAG_SECONDS - time.time()),
            priority=EVENT_PRIORITY,
        )
        final = vonage.stack.wait_finished(batch_id, timeout=30)
    finally:
        if client.get(event_drain_flag(shard)) == held:  # the drain gives the flag back itself
            client.delete(event_drain_flag(shard))
        client.close()
    ended = vonage.call(batch_id)
    assert [a["outcome"] for a in ended["attempts"]] == ["machine"], ended["attempts"]
    assert ended["outcome"] == "machine" and ended["status"] == "failed"
    assert (final["completed_calls"], final["failed_calls"]) == (0, 1)


# --- malformed and oversized requests ------------------------------------------------------------


def test_an_oversized_webhook_body_gets_413(vonage: VonageStack) -> None:
    batch_id, call = vonage.silent_call(number(340, 0))
    big = compact({"uuid": call["attempts"][0]["provider_call_id"], "status": "completed", "pad": "x" * 100_000})
    response = vonage.post(vonage.event_url(call["id"], 1), big, vonage.signed(big))
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    chunked = requests.post(
        vonage.event_url(call["id"], 1),
        data=iter([big[:50_000], big[50_000:]]),
        headers={"Content-Type": "application/json", "Authorization": vonage.signed(big)},
        timeout=10,
    )
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "payload_too_large"
    assert vonage.call(batch_id)["outcome"] is None


def test_a_webhook_without_a_valid_signature_is_refused_before_its_body_is_read(vonage: VonageStack) -> None:
    """The answer comes while the announced body has not been sent at all."""
    host, port = vonage.stack.api_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(
            b"POST /webhooks/vonage/event?call_id=c&attempt=1 HTTP/1.1\r\n"
            b"Host: " + host.encode() + b"\r\nAuthorization: Bearer forged\r\n"
            b"Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
        )
        head = conn.recv(4096)
    assert head.startswith(b"HTTP/1.1 401"), head[:100]


@pytest.mark.parametrize(
    "query",
    [
        "step=%C2%B2",
        "step=%D9%A1",
        "step=%EF%BC%91",
        "step=-1",
        "step=1.5",
        "step=",
        "step=99999999",
        "step=0x1",
        "attempt=%C2%B2",
        "attempt=0",
        "attempt=",
        "call_id=",
        "call_id=a%00b",
        "token=",
        "token=zz",
    ],
)
def test_odd_webhook_queries_get_a_clean_4xx(vonage: VonageStack, query: str) -> None:
    call_id = "c-" + os.urandom(4).hex()
    fields = dict(part.split("=", 1) for part in f"call_id={call_id}&attempt=1&step=1&token={'0' * 32}".split("&"))
    fields.update([query.split("=", 1)])
    url = f"{vonage.stack.api_url}/webhooks/vonage/input?" + "&".join(f"{k}={v}" for k, v in fields.items())
    body = compact({"uuid": "u", "dtmf": {"digits": "1"}})
    response = vonage.post(url, body, vonage.signed(body))
    assert response.status_code in (400, 401), (query, response.status_code, response.text)
    assert response.json()["error"]["code"] in ("invalid_request", "unauthorized")
    event = vonage.post(url.replace("/input", "/event"), body, vonage.signed(body))
    assert event.status_code in (204, 400, 401), (query, event.status_code)  # 204: `step` is no event field


def test_an_input_step_the_script_does_not_have_gets_an_empty_ncco(vonage: VonageStack) -> None:
    batch_id, call = vonage.silent_call(number(350, 0))
    body = compact({"uuid": call["attempts"][0]["provider_call_id"], "dtmf": {"digits": "1"}})
    for step in (0, 2, 99, 999999):  # not an input step of TYPED, or beyond its end
        response = vonage.post(vonage.input_url(call["id"], 1, step), body, vonage.signed(body))
        assert response.status_code == 200 and response.json() == [], step


# --- where the routes are ------------------------------------------------------------------------


def test_the_simulator_serves_no_vonage_webhooks(api_factory: Callable[..., Api]) -> None:
    """The simulator hands its events to the workers; an HTTP route would only be a way in."""
    api = api_factory()
    assert api.app.url_map.bind("localhost").test(vw.EVENT_PATH, method="POST") is False
    for path in (vw.EVENT_PATH + "?call_id=c&attempt=1", vw.INPUT_PATH + "?call_id=c&attempt=1&step=1", vw.ANSWER_PATH):
        response = api.client.post(path, data=b'{"status": "completed"}', content_type="application/json")
        assert response.status_code == 404, path
        assert response.get_json()["error"]["code"] == "not_found"


def test_unsigned_in_development_a_webhook_still_needs_its_url_token(
    api_factory: Callable[..., Api],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With VONAGE_ALLOW_UNSIGNED=1 nobody signs, but a forged `completed` must still name a URL
    we gave Vonage: its token is keyed (then) from the application's private key."""
    application = make_application()
    env = {
        "BATCHCALLS_PROVIDER": "vonage",
        "VONAGE_ALLOW_UNSIGNED": "1",
        "VONAGE_FROM_NUMBER": FROM,
        "VONAGE_APPLICATION_ID": application.application_id,
        "VONAGE_PRIVATE_KEY": application.private_key_env,
    }
    with caplog.at_level(logging.WARNING, logger="batchcalls.api"):
        api = api_factory(**env)
    assert "accepted unsigned" in caplog.text
    call_id = "call_" + os.urandom(10).hex()
    completed = compact({"uuid": "u-1", "status": "completed", "timestamp": "2030-01-01T00:00:00.000Z"})
    key = webhook_url_key(api.app.extensions["batchcalls.engine"].settings)
    for url in (
        f"{vw.EVENT_PATH}?call_id={call_id}&attempt=1",
        vw.event_url("", call_id, 1, key=vw.url_key(b"guessed")),
        vw.event_url("", call_id, 1, key=vw.url_key(application.signature_secret.encode())),
    ):
        response = api.client.post(url, data=completed, content_type="application/json")
        assert response.status_code == 401, url
        assert response.get_json()["error"]["code"] == "unauthorized"
    answer = compact({"uuid": "u-1", "dtmf": {"digits": "1"}})
    response = api.client.post(vw.input_url("", call_id, 1, 1, key=key), data=answer, content_type="application/json")
    assert response.status_code == 200 and response.get_json() == []  # taken unsigned: an unknown call


def test_a_webhook_whose_handling_failed_is_taken_on_vonages_retry(
    api_factory: Callable[..., Api],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Vonage retries a webhook it got no 2xx for, perhaps with the same token: a token is only
    spent on a request that was handled."""
    application = make_application()
    api = api_factory(
        BATCHCALLS_PROVIDER="vonage",
        VONAGE_SIGNATURE_SECRET=application.signature_secret,
        VONAGE_FROM_NUMBER=FROM,
        VONAGE_APPLICATION_ID=application.application_id,
        VONAGE_PRIVATE_KEY=application.private_key_env,
    )
    url = vw.event_url("", "call_" + os.urandom(10).hex(), 1, key=vw.url_key(application.signature_secret.encode()))
    body = compact({"uuid": "u-1", "status": "ringing"})
    headers = {
        "Authorization": "Bearer " + sign_webhook(body, application.signature_secret, application.application_id)
    }

    def broker_down(*_: object, **__: object) -> None:
        raise OperationalError("broker unreachable")

    monkeypatch.setattr(api.app.extensions["batchcalls.engine"].tasks, "record_event", broker_down)
    assert api.client.post(url, data=body, headers=headers, content_type="application/json").status_code == 500
    monkeypatch.undo()
    assert api.client.post(url, data=body, headers=headers, content_type="application/json").status_code == 204
    replay = api.client.post(url, data=body, headers=headers, content_type="application/json")
    assert replay.status_code == 401  # handled once: now a replay


@pytest.mark.parametrize("process", ["worker", "api"])
def test_vonage_without_a_signature_secret_does_not_start(process: str) -> None:
    application = make_application()
    env = {
        **os.environ,
        "BATCHCALLS_PROVIDER": "vonage",
        "VONAGE_APPLICATION_ID": application.application_id,
        "VONAGE_PRIVATE_KEY": application.private_key_env,
        "VONAGE_FROM_NUMBER": FROM,
        "DATABASE_URL": "postgresql://127.0.0.1:9/none",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("VONAGE_SIGNATURE_SECRET", None)
    env.pop("VONAGE_ALLOW_UNSIGNED", None)
    command = {
        "worker": [sys.executable, "-m", "celery", "-A", "workers.tasks", "worker", "--pool", "solo"],
        "api": [sys.executable, "-c", "from api.app import create_app; create_app()"],
    }[process]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)
    assert done.returncode != 0
    assert b"needs VONAGE_SIGNATURE_SECRET" in done.stdout + done.stderr


# --- the SDK configuration, against the fake directly --------------------------------------------


@pytest.fixture
def lone_fake(tmp_path: Path) -> Iterator[tuple[FakeVonage, Application, Path]]:
    application = make_application()
    cert, key = make_certificate(tmp_path)
    fake = FakeVonage(application, cert, key, cps=100)
    yield fake, application, cert
    fake.stop()


def dial(call_id: str) -> DialRequest:
    return DialRequest(call_id, 1, number(700, 0), {"type": None, "steps": [{"type": "text", "text": "Hi"}]}, None)


def test_the_sdk_as_shipped_would_call_twice_on_a_dropped_connection_ours_once(
    lone_fake: tuple[FakeVonage, Application, Path],
) -> None:
    fake, application, cert = lone_fake
    fake.drop_creates(2, placed=True)
    shipped = Vonage(
        Auth(
            application_id=application.application_id,
            private_key=pkcs8_pem(load_private_key(application.private_key_env)),
        ),
        HttpClientOptions(api_host=fake.host),
    )
    shipped.http_client._session.verify = str(cert)
    shipped.http_client._session.trust_env = False  # else REQUESTS_CA_BUNDLE would win over verify
    shipped.voice.create_call(
        CreateCallRequest(
            to=[ToPhone(number="442079460000")],
            from_=Phone(number=digits(FROM)),
            ncco=[Talk(text="Hi")],
            event_url=["http://127.0.0.1:9/webhooks/vonage/event?call_id=shipped&attempt=1"],
        )
    )
    shipped_calls = [c for c in fake.creates_for("shipped") if c.uuid]
    assert len(shipped_calls) == 3, "one request of the shipped SDK made three phone calls"

    fake.drop_creates(2, placed=True)
    env = {
        "DATABASE_URL": "-",
        "REDIS_URL": "-",
        "PUBLIC_BASE_URL": "http://127.0.0.1:9",
        **vonage_env(fake, application, cert),
    }
    provider = make_vonage_provider(load_settings(env))
    with pytest.raises(ProviderError) as excinfo:
        provider.create_call(dial("ours"))
    assert excinfo.value.definite is False
    assert len(fake.creates_for("ours")) == 1
    print(f"\nshipped SDK: {len(shipped_calls)} calls for one dropped create; configured: 1")


def test_a_wrong_key_is_refused_by_vonage_and_fails_the_attempt_definitely(
    lone_fake: tuple[FakeVonage, Application, Path],
) -> None:
    fake, application, cert = lone_fake
    stranger = make_application()
    env = {
        "DATABASE_URL": "-",
        "REDIS_URL": "-",
        "PUBLIC_BASE_URL": "http://127.0.0.1:9",
        **vonage_env(fake, application, cert),
        "VONAGE_PRIVATE_KEY": stranger.private_key_env,
    }
    provider = make_vonage_provider(load_settings(env))
    with pytest.raises(ProviderError) as excinfo:
        provider.create_call(dial("stranger"))
    assert excinfo.value.definite is True and excinfo.value.throttled is False
    assert "401" in excinfo.value.message
    assert [c.answer for c in fake.creates_for("stranger")] == ["unauthorized"]


def test_hangup_ends_a_live_call_and_leaves_an_ended_one_alone(
    lone_fake: tuple[FakeVonage, Application, Path],
) -> None:
    fake, application, cert = lone_fake
    fake.silent.add(number(700, 0))  # rings until hung up
    env = {
        "DATABASE_URL": "-",
        "REDIS_URL": "-",
        "PUBLIC_BASE_URL": "http://127.0.0.1:9",
        **vonage_env(fake, application, cert),
    }
    provider = make_vonage_provider(load_settings(env))
    uuid = provider.create_call(dial("live"))
    provider.hangup("live", 1, uuid)
    assert wait_for(lambda: fake.calls[uuid].ended_at, 5, "the call ended")
    provider.hangup("live", 1, uuid)  # already over: Vonage answers 400, which is no error
    provider.hangup("gone", 1, "00000000-0000-4000-8000-00000000dead")  # unknown: 404, no error
    assert [r for r in fake.requests if r[0] == "PUT"] == [
        ("PUT", f"/v1/calls/{uuid}", 204),
        ("PUT", f"/v1/calls/{uuid}", 400),
        ("PUT", "/v1/calls/00000000-0000-4000-8000-00000000dead", 404),
    ]
