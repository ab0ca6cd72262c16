"""Scripts rendered to NCCO (pure), and the script checks of input and agent steps."""

from __future__ import annotations

from typing import Any

import pytest

from batchcalls.adapters.telephony import ncco
from batchcalls.domain import scripts
from batchcalls.domain.scripts import normalize_script, script_problems_by_path
from batchcalls.domain.voices import voice_catalog

VOICE = {"language": "en-GB", "style": 4}


def url(step: int) -> str:
    return f"https://hooks.example/webhooks/vonage/input?step={step}"


def render(script: dict[str, Any], voice: dict[str, Any] | None = VOICE, **kwargs: Any) -> list[dict[str, Any]]:
    return ncco.render(normalize_script(script), voice, input_url=url, **kwargs)


def test_a_text_script_is_one_talk_in_the_voice_of_the_call() -> None:
    assert render({"text": "Hello there"}) == [
        {"action": "talk", "text": "Hello there", "language": "en-GB", "style": 4},
    ]


def test_no_voice_leaves_vonage_its_default_voice() -> None:
    assert render({"text": "Hi"}, voice=None) == [{"action": "talk", "text": "Hi"}]


def test_a_premium_voice_asks_for_premium() -> None:
    assert render({"text": "Hi"}, voice={"language": "en-US", "style": 0, "premium": True})[0]["premium"] is True


@pytest.mark.parametrize("voice_id", sorted(voice_catalog()))
def test_every_catalog_voice_renders_its_language_and_style(voice_id: str) -> None:
    voice = voice_catalog()[voice_id]
    (talk,) = render({"text": "Hi"}, voice=voice)
    assert (talk["language"], talk["style"]) == (voice["language"], voice["style"])


def test_the_catalog_maps_voices_to_vonage_languages_and_styles_of_the_named_gender() -> None:
    # Vonage's style numbers, from its table of legacy voice names (language, style):
    # Kimberly en-US 0 (f), Matthew en-US 9 (m), Amy en-GB 0 (f), Brian en-GB 4 (m), Conchita es-ES 0 (f),
    # Hans de-DE 3 (m), Celine fr-FR 0 (f).
    catalog = voice_catalog()
    expected = {
        "voice_female_1": ("en-US", 0),
        "voice_male_1": ("en-US", 9),
        "voice_female_2": ("en-GB", 0),
        "voice_male_2": ("en-GB", 4),
        "voice_female_es": ("es-ES", 0),
        "voice_male_de": ("de-DE", 3),
        "voice_female_fr": ("fr-FR", 0),
    }
    for voice_id, (language, style) in expected.items():
        assert (catalog[voice_id]["language"], catalog[voice_id]["style"]) == (language, style), voice_id


TYPED = {
    "type": "survey",
    "steps": [
        {"text": "Hello, this is Acme."},
        {"text": "Press 1 or say yes if you are interested."},
        {
            "type": "input",
            "dtmf": {"max_digits": 1, "timeout": 5, "submit_on_hash": True},
            "speech": {"context": ["yes", "no"], "end_on_silence": 1.5},
            "name": "interest",
        },
        {"text": "Connecting you now."},
        {"type": "agent", "url": "wss://agent.example/voice", "headers": {"lead_id": "42", "score": 7}},
        {"text": "Goodbye."},
        {"type": "input", "speech": True},
    ],
}


def test_a_typed_script_renders_up_to_its_first_input_with_barge_in_before_it() -> None:
    assert render(TYPED, from_number="+447700900001") == [
        {"action": "talk", "text": "Hello, this is Acme.", "language": "en-GB", "style": 4, "bargeIn": True},
        {
            "action": "talk",
            "text": "Press 1 or say yes if you are interested.",
            "language": "en-GB",
            "style": 4,
            "bargeIn": True,
        },
        {
            "action": "input",
            "type": ["dtmf", "speech"],
            "dtmf": {"maxDigits": 1, "timeOut": 5, "submitOnHash": True},
            "speech": {"context": ["yes", "no"], "endOnSilence": 1.5, "language": "en-GB"},
            "eventUrl": [url(2)],
            "eventMethod": "POST",
        },
    ]


def test_the_input_webhook_answers_with_the_next_segment() -> None:
    assert render(TYPED, from_number="+447700900001", start=3) == [
        {"action": "talk", "text": "Connecting you now.", "language": "en-GB", "style": 4},
        {
            "action": "connect",
            "from": "447700900001",
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": "wss://agent.example/voice",
                    "content-type": "audio/l16;rate=16000",
                    "headers": {"lead_id": "42", "score": 7},
                }
            ],
        },
        {"action": "talk", "text": "Goodbye.", "language": "en-GB", "style": 4, "bargeIn": True},
        {
            "action": "input",
            "type": ["speech"],
            "speech": {"language": "en-GB"},
            "eventUrl": [url(6)],
            "eventMethod": "POST",
        },
    ]
    assert render(TYPED, start=7) == []


def test_barge_in_only_where_an_input_comes_next() -> None:
    script = {"steps": [{"text": "a"}, {"type": "agent", "url": "wss://x.example/a"}, {"text": "b"}]}
    assert all("bargeIn" not in action for action in render(script))


def test_input_step_lookup() -> None:
    script = normalize_script(TYPED)
    assert scripts.input_step(script, 2) is not None and scripts.input_step(script, 6) is not None
    assert scripts.input_step(script, 0) is None and scripts.input_step(script, 99) is None


# --- the script checks of the new step kinds ------------------------------------------------


def test_input_and_agent_steps_are_valid_scripts() -> None:
    assert script_problems_by_path(TYPED) == {}
    assert script_problems_by_path({"steps": [{"type": "input", "dtmf": True}]}) == {}


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"type": "input"}, "steps[0].dtmf"),
        ({"type": "input", "dtmf": "yes"}, "steps[0].dtmf"),
        ({"type": "input", "dtmf": {"max_digits": 21}}, "steps[0].dtmf"),
        ({"type": "input", "dtmf": {"timeout": True}}, "steps[0].dtmf"),
        ({"type": "input", "dtmf": {"maxDigits": 2}}, "steps[0].dtmf"),
        ({"type": "input", "speech": {"end_on_silence": 0.1}}, "steps[0].speech"),
        ({"type": "input", "speech": {"language": "english"}}, "steps[0].speech"),
        ({"type": "input", "speech": {"context": "yes"}}, "steps[0].speech"),
        ({"type": "input", "dtmf": True, "name": ""}, "steps[0].name"),
        ({"type": "input", "dtmf": True, "text": "Press 1"}, "steps[0].text"),
        ({"type": "agent"}, "steps[0].url"),
        ({"type": "agent", "url": "https://agent.example/voice"}, "steps[0].url"),
        ({"type": "agent", "url": "wss://agent.example/v", "headers": {"a": {"nested": 1}}}, "steps[0].headers"),
        ({"type": "agent", "url": "wss://agent.example/v", "headers": ["a"]}, "steps[0].headers"),
    ],
)
def test_bad_input_and_agent_steps_are_named(step: dict[str, Any], path: str) -> None:
    problems = script_problems_by_path({"steps": [step]})
    assert problems and set(problems) == {path}, problems
