"""Voicemail without I/O: the request field's checks, the machine-detection settings and the
transfer NCCO Vonage is given, the beep webhook, and the simulator's machines leaving messages.
(On the real stack: tests/integration/test_voicemail.py and test_vonage.py.)"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from api.schemas import load_batch_request
from batchcalls.adapters.telephony import ncco
from batchcalls.adapters.telephony import vonage_webhooks as vw
from batchcalls.adapters.telephony.base import DialRequest
from batchcalls.adapters.telephony.factory import make_provider
from batchcalls.adapters.telephony.simulator import SimulatorProvider
from batchcalls.adapters.telephony.vonage import VonageProvider
from batchcalls.domain.errors import InvalidRequest, InvalidScript
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.payloads import attempt_view
from batchcalls.domain.scripts import MAX_TEXT_CHARS
from batchcalls.domain.states import AttemptStatus, Outcome
from batchcalls.domain.validation import build_batch
from batchcalls.domain.voicemail import message_of, requested_voicemails
from tests.unit.test_vonage_provider import settings

UK = "+442079460000"
LEAVE = {"action": "leave_message", "text": "Please call us back."}
BEEP_DETECTION = {"behavior": "continue", "mode": "default", "beep_timeout": 45}


def call(**fields: Any) -> dict[str, Any]:
    return {"phone_number": UK, "script": {"text": "Hello."}, **fields}


# --- the request field ---------------------------------------------------------------------------


def test_a_calls_own_voicemail_replaces_its_batchs_and_absent_means_hang_up() -> None:
    body = {
        "calls": [call(), call(voicemail={"action": "hangup"}), call(voicemail=LEAVE)],
        "voicemail": LEAVE,
        "dedupe": False,  # every call is to the one number
    }
    batch = build_batch(load_batch_request(body), max_concurrency=10, voices={})
    assert batch.voicemail == LEAVE
    assert [c.voicemail for c in batch.calls] == [None, {"action": "hangup"}, LEAVE]
    assert [message_of(c.voicemail or batch.voicemail) for c in batch.calls] == [LEAVE["text"], None, LEAVE["text"]]
    plain = build_batch(load_batch_request({"calls": [call()]}), max_concurrency=10, voices={})
    assert plain.voicemail is None and message_of(plain.voicemail) is None


@pytest.mark.parametrize(
    ("voicemail", "error", "path"),
    [
        ([], InvalidRequest, ""),
        ({}, InvalidRequest, ".action"),
        ({"action": "voicemail"}, InvalidRequest, ".action"),
        ({"action": "hangup", "text": "Hi"}, InvalidRequest, ".text"),
        ({**LEAVE, "voice_id": "x"}, InvalidRequest, ".voice_id"),
        ({"action": "leave_message"}, InvalidScript, ".text"),
        ({"action": "leave_message", "text": 7}, InvalidScript, ".text"),
        ({"action": "leave_message", "text": " "}, InvalidScript, ".text"),
        ({"action": "leave_message", "text": "x" * (MAX_TEXT_CHARS + 1)}, InvalidScript, ".text"),
    ],
)
def test_a_bad_voicemail_names_its_path_on_the_batch_and_on_a_call(
    voicemail: Any, error: type[Exception], path: str
) -> None:
    for data, calls, named in (
        ({"voicemail": voicemail}, [], "voicemail" + path),
        ({}, [{}, {"voicemail": voicemail}], "calls[1].voicemail" + path),
    ):
        with pytest.raises(error) as raised:
            requested_voicemails(data, calls)
        assert type(raised.value) is error
        assert named in raised.value.details  # type: ignore[attr-defined]


def test_the_longest_text_is_accepted() -> None:
    text = "x" * MAX_TEXT_CHARS
    assert requested_voicemails({"voicemail": {"action": "leave_message", "text": text}}, [])[0] == {
        "action": "leave_message",
        "text": text,
    }


def test_voicemail_is_a_known_field_of_a_call_and_of_a_batch() -> None:
    loaded = load_batch_request({"calls": [call(voicemail=LEAVE)], "voicemail": {"action": "hangup"}})
    assert loaded["voicemail"] == {"action": "hangup"} and loaded["calls"][0]["voicemail"] == LEAVE


def test_a_calls_variables_fill_the_voicemail_text_as_they_fill_its_script() -> None:
    template = {"action": "leave_message", "text": "Hello {{first_name|there}}, call {{desk}}. {% if x %}"}
    body = {
        "calls": [
            call(variables={"first_name": "Ada", "desk": 42}),
            call(variables={"desk": "sales"}),
            call(),
            call(voicemail={"action": "hangup"}),
        ],
        "voicemail": template,
        "dedupe": False,
    }
    with pytest.raises(InvalidScript) as raised:
        build_batch(load_batch_request(body), max_concurrency=10, voices={})
    assert list(raised.value.details) == ["calls[2].voicemail.text"]
    assert "'desk'" in raised.value.details["calls[2].voicemail.text"][0]
    body["calls"][2]["variables"] = {"desk": 1}
    batch = build_batch(load_batch_request(body), max_concurrency=10, voices={})
    assert batch.voicemail == template
    assert [message_of(c.voicemail) for c in batch.calls] == [
        "Hello Ada, call 42. {% if x %}",
        "Hello there, call sales. {% if x %}",
        "Hello there, call 1. {% if x %}",
        None,
    ]


def test_a_placeholder_without_a_value_stays_a_problem_whatever_it_names() -> None:
    body = {"calls": [call(voicemail={"action": "leave_message", "text": "{{__class__}}"})]}
    with pytest.raises(InvalidScript) as raised:
        build_batch(load_batch_request(body), max_concurrency=10, voices={})
    assert "__class__" in raised.value.details["calls[0].voicemail.text"][0]
    long = {"calls": [call(variables={"v": "x" * 1000}, voicemail={"action": "leave_message", "text": "{{v}}" * 2})]}
    with pytest.raises(InvalidScript) as too_long:
        build_batch(load_batch_request(long), max_concurrency=10, voices={})
    assert "after its variables were filled in" in too_long.value.details["calls[0].voicemail.text"][0]


# --- what Vonage is given ------------------------------------------------------------------------


def test_machine_detection_settings_hang_up_by_default_and_listen_for_the_beep_with_a_message() -> None:
    assert ncco.machine_detection(None) == {"machine_detection": "hangup"}
    assert ncco.machine_detection("Call us back.") == {"advanced_machine_detection": BEEP_DETECTION}


def test_the_transfer_ncco_speaks_the_message_in_the_calls_voice() -> None:
    voice = {"language": "en-GB", "style": 4, "premium": True}
    assert ncco.voicemail_ncco("Call us back.", voice) == [
        {"action": "talk", "text": "Call us back.", "language": "en-GB", "style": 4, "premium": True}
    ]
    assert ncco.voicemail_ncco("Call us back.", None) == [{"action": "talk", "text": "Call us back."}]


@dataclass
class RecordingVoice:
    """The SDK's `voice` client, recording what it would send."""

    creates: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    def create_call(self, params: Any) -> Any:
        self.creates.append(params.model_dump(by_alias=True, exclude_none=True))
        return SimpleNamespace(uuid="uuid-1")

    def transfer_call_ncco(self, uuid: str, actions: list[Any]) -> None:
        self.transfers.append((uuid, [a.model_dump(by_alias=True, exclude_none=True) for a in actions]))


def recording_provider(monkeypatch: pytest.MonkeyPatch) -> tuple[VonageProvider, RecordingVoice]:
    provider = make_provider(settings(), sink=None)  # type: ignore[arg-type]
    assert isinstance(provider, VonageProvider)
    voice = RecordingVoice()
    monkeypatch.setattr(provider, "client", lambda: SimpleNamespace(voice=voice))
    return provider, voice


def test_the_create_body_carries_beep_detection_only_for_a_call_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, voice = recording_provider(monkeypatch)
    script = {"type": "text", "steps": [{"text": "Hi"}]}
    provider.create_call(DialRequest("call_1", 1, UK, script, None, voicemail="Call us back."))
    provider.create_call(DialRequest("call_2", 1, UK, script, None))
    with_message, without = voice.creates
    assert with_message["advanced_machine_detection"] == BEEP_DETECTION and "machine_detection" not in with_message
    assert without["machine_detection"] == "hangup" and "advanced_machine_detection" not in without


def test_leaving_a_voicemail_transfers_the_call_to_a_talk(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, voice = recording_provider(monkeypatch)
    assert provider.leave_voicemail("uuid-9", "Call us back.", "voice_female_1") is True
    ((uuid, actions),) = voice.transfers
    assert uuid == "uuid-9"
    assert [(a["action"], a["text"]) for a in actions] == [("talk", "Call us back.")]


@pytest.mark.parametrize(
    ("payload", "beeped"),
    [
        ({"status": "machine", "sub_state": "beep_start", "call_uuid": "u-1"}, "u-1"),
        ({"status": "machine", "sub_state": "beep_start", "uuid": "u-2"}, "u-2"),
        ({"status": "machine", "call_uuid": "u-1"}, None),
        ({"status": "machine", "sub_state": "beep_timeout", "call_uuid": "u-1"}, None),
        ({"status": "human", "sub_state": "beep_start", "call_uuid": "u-1"}, None),
        ({"status": "machine", "sub_state": "beep_start"}, None),
    ],
)
def test_only_a_machines_beep_start_asks_for_the_message(payload: dict[str, Any], beeped: str | None) -> None:
    assert vw.beep_of(payload) == beeped


def test_the_beep_event_itself_changes_nothing_more_than_the_machine_verdict() -> None:
    verdict = vw.event_from_webhook("c", 1, {"status": "machine", "call_uuid": "u"}, 1e9)
    beep = vw.event_from_webhook("c", 1, {"status": "machine", "sub_state": "beep_start", "call_uuid": "u"}, 1e9)
    assert verdict is not None and beep is not None
    assert (beep.status, beep.outcome) == (verdict.status, verdict.outcome) == (AttemptStatus.MACHINE, None)


# --- the simulator and the record ----------------------------------------------------------------


def test_the_simulators_machine_leaves_the_message_and_logs_it(tmp_path: Path) -> None:
    sent: list[ProviderEvent] = []
    log = tmp_path / "sim.jsonl"
    provider = SimulatorProvider(lambda event, delay: sent.append(event), log_path=str(log))
    script = {"type": "text", "steps": [{"text": "Hi"}]}
    uuid = provider.create_call(DialRequest("call_1", 1, "+442079460005", script, None, voicemail="Call us back."))
    provider.create_call(DialRequest("call_2", 1, "+442079460005", script, None))
    provider.create_call(DialRequest("call_3", 1, "+442079460000", script, None, voicemail="Call us back."))
    endings = {e.call_id: e for e in sent if e.status is AttemptStatus.ENDED}
    assert [(endings[c].outcome, endings[c].voicemail_left) for c in ("call_1", "call_2", "call_3")] == [
        (Outcome.MACHINE, True),
        (Outcome.MACHINE, False),
        (Outcome.COMPLETED, False),
    ]
    logged = [json.loads(line) for line in Path(str(log) + ".voicemails").read_text().splitlines()]
    assert [(v["call_id"], v["attempt"], v["uuid"], v["text"]) for v in logged] == [
        ("call_1", 1, uuid, "Call us back.")
    ]


def test_voicemail_left_travels_with_the_event_and_shows_on_the_attempt() -> None:
    event = ProviderEvent("c", 1, AttemptStatus.ENDED, 1e9, Outcome.MACHINE, "u", voicemail_left=True)
    assert ProviderEvent.from_message(json.loads(json.dumps(event.to_message()))) == event
    assert ProviderEvent.from_message({**event.to_message(), "voicemail_left": None}).voicemail_left is False
    assert attempt_view({"number": 1, "voicemail_left": True})["voicemail_left"] is True
    assert attempt_view({"number": 1})["voicemail_left"] is False
