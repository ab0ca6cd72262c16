"""The POST /v1/batches body: schema loading (api.schemas) and meaning (batchcalls.domain.validation)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import phonenumbers
import pytest

from api.call_data import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, nesting_depth
from api.schemas import flatten_errors, load_batch_request
from batchcalls.domain import validation
from batchcalls.domain.errors import (
    ConcurrencyLimit,
    InvalidPhoneNumber,
    InvalidRequest,
    InvalidScript,
)
from batchcalls.domain.models import DEFAULT_PRIORITY, NewBatch
from batchcalls.domain.retry import RetryPolicy
from batchcalls.domain.scripts import (
    MAX_SCRIPT_TYPE_CHARS,
    MAX_STEPS,
    MAX_TEXT_CHARS,
    SHOWN_TYPE_CHARS,
    normalize_script,
    script_problems_by_path,
)
from batchcalls.domain.states import Outcome
from batchcalls.domain.validation import build_batch, normalize_phone_number
from batchcalls.domain.voices import voice_catalog

# The two request bodies of ../shared/seed/batch-calls.md, verbatim.
SEED_BASIC: dict[str, Any] = {
    "calls": [
        {"phone_number": "+1234567890", "script": {"text": "Hello, this is a test call."}},
        {"phone_number": "+0987654321", "script": {"text": "Hi, this is another test call."}},
    ],
    "concurrency": 2,
}
SEED_ADVANCED: dict[str, Any] = {
    "calls": [
        {
            "phone_number": "+1234567890",
            "voice_id": "voice_female_1",
            "script": {
                "type": "sales_call",
                "steps": [{"text": "Hello, I'm calling about our new product."}],
            },
        },
        {
            "phone_number": "+0987654321",
            "voice_id": "voice_male_1",
            "script": {
                "type": "support_call",
                "steps": [{"text": "Hi, I'm calling to follow up on your support ticket."}],
            },
        },
    ],
    "concurrency": 5,
    "retry_config": {"max_attempts": 3, "delay": 300},
}

UK, US = "+442079460000", "+14155552671"
VOICES: dict[str, dict[str, Any]] = {"voice_female_1": {}, "voice_male_1": {}}


def with_valid_numbers(body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["calls"][0]["phone_number"] = UK
    body["calls"][1]["phone_number"] = US
    return body


def call(**fields: Any) -> dict[str, Any]:
    return {"phone_number": UK, "script": {"text": "Hello."}, **fields}


def build(body: object, *, max_concurrency: int = 100) -> NewBatch:
    return build_batch(load_batch_request(body), max_concurrency=max_concurrency, voices=VOICES)


def details_of(excinfo: pytest.ExceptionInfo[InvalidRequest]) -> dict[str, list[str]]:
    details = excinfo.value.details
    assert isinstance(details, dict)
    return details


# --- The seed's bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [SEED_BASIC, SEED_ADVANCED], ids=["basic", "advanced"])
def test_seed_bodies_have_the_right_shape(body: dict[str, Any]) -> None:
    assert load_batch_request(copy.deepcopy(body)) == body


@pytest.mark.parametrize("body", [SEED_BASIC, SEED_ADVANCED], ids=["basic", "advanced"])
def test_seed_numbers_are_not_valid_numbers(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidPhoneNumber) as excinfo:
        build(copy.deepcopy(body))
    assert excinfo.value.code == "invalid_phone_number"
    assert set(details_of(excinfo)) == {"calls[0].phone_number", "calls[1].phone_number"}


def test_basic_seed_with_valid_numbers() -> None:
    batch = build(with_valid_numbers(SEED_BASIC))
    assert [c.phone_number for c in batch.calls] == [UK, US]
    assert batch.calls[0].script == {
        "type": None,
        "steps": [{"type": "text", "text": "Hello, this is a test call."}],
    }
    assert batch.concurrency == 2
    assert batch.retry == RetryPolicy()
    assert batch.retry.max_attempts == 1
    assert batch.callback_url is None
    assert batch.metadata is None
    assert [c.priority for c in batch.calls] == [DEFAULT_PRIORITY] * 2


def test_advanced_seed_with_valid_numbers() -> None:
    batch = build(with_valid_numbers(SEED_ADVANCED))
    first, second = batch.calls
    assert first.voice_id == "voice_female_1" and second.voice_id == "voice_male_1"
    assert first.script_type == "sales_call" and second.script_type == "support_call"
    assert second.script["steps"] == [{"type": "text", "text": "Hi, I'm calling to follow up on your support ticket."}]
    assert batch.concurrency == 5
    assert batch.retry.max_attempts == 3
    assert batch.retry.delay == 300
    assert batch.retry.backoff_multiplier == 1
    assert batch.retry.retry_on == {Outcome.BUSY, Outcome.NO_ANSWER, Outcome.FAILED}


def test_the_real_voice_catalog_knows_the_seed_voices() -> None:
    catalog = voice_catalog()
    assert {"voice_female_1", "voice_male_1"} <= set(catalog)
    assert catalog["voice_female_1"]["language"] == "en-US"
    assert voice_catalog() is catalog  # loaded once
    body = load_batch_request(with_valid_numbers(SEED_ADVANCED))
    assert len(build_batch(body, max_concurrency=100, voices=catalog).calls) == 2


# --- Shape: api.schemas ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"calls": [call()], "priorty": 1}, "priorty"),
        ({"calls": [call(phone="+1")]}, "calls[0].phone"),
        ({"calls": [call(), call(script={"text": "Hi.", "voice": "x"})]}, "calls[1].script.voice"),
        ({"calls": [call()], "retry_config": {"max_attempts": 2, "jitter": 1}}, "retry_config.jitter"),
        ({"calls": [call()], "send_at": "2030-01-01T00:00:00Z"}, "send_at"),  # start_at is its name
    ],
)
def test_unknown_fields_are_rejected_at_every_level(body: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        load_batch_request(body)
    assert excinfo.value.code == "invalid_request"
    assert details_of(excinfo) == {path: ["Unknown field."]}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"calls": [call()], "concurrency": True}, "concurrency"),
        ({"calls": [call()], "priority": False}, "priority"),
        ({"calls": [call(), call(priority=True)]}, "calls[1].priority"),
        ({"calls": [call()], "retry_config": {"max_attempts": True}}, "retry_config.max_attempts"),
        ({"calls": [call()], "retry_config": {"delay": True}}, "retry_config.delay"),
        ({"calls": [call()], "retry_config": {"backoff_multiplier": False}}, "retry_config.backoff_multiplier"),
    ],
)
def test_booleans_are_not_numbers(body: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        load_batch_request(body)
    assert list(details_of(excinfo)) == [path]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"calls": [call()], "concurrency": "5"}, "concurrency"),
        ({"calls": [call()], "concurrency": 2.5}, "concurrency"),
        ({"calls": [call(priority="1")]}, "calls[0].priority"),
        ({"calls": [call()], "retry_config": {"delay": "300"}}, "retry_config.delay"),
        ({"calls": [call()], "retry_config": {"retry_on": "busy"}}, "retry_config.retry_on"),
        ({"calls": [call()], "retry_config": {"retry_on": ["busy", 3]}}, "retry_config.retry_on[1]"),
        ({"calls": [call()], "retry_config": 3}, "retry_config"),
        ({"calls": [call(phone_number=14155552671)]}, "calls[0].phone_number"),
        ({"calls": [call(voice_id=1)]}, "calls[0].voice_id"),
        ({"calls": [call(script="Hello")]}, "calls[0].script"),
        ({"calls": [call(script={"text": 5})]}, "calls[0].script.text"),
        ({"calls": [call(script={"steps": "Hello"})]}, "calls[0].script.steps"),
        ({"calls": [call(script={"steps": [{"text": "a"}, "b"]})]}, "calls[0].script.steps[1]"),
        ({"calls": [call(), "+442079460000"]}, "calls[1]"),
        ({"calls": {"phone_number": UK}}, "calls"),
        ({"calls": []}, "calls"),
        ({}, "calls"),
        ({"calls": [call()], "metadata": ["a"]}, "metadata"),
        ({"calls": [call()], "callback_url": "ftp://example.com/hook"}, "callback_url"),
        ({"calls": [call()], "callback_url": "not a url"}, "callback_url"),
        ([call()], "body"),
    ],
)
def test_wrong_types_are_invalid_requests(body: object, path: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        load_batch_request(body)
    assert type(excinfo.value) is InvalidRequest
    assert list(details_of(excinfo)) == [path]


def test_priority_range_is_checked_in_the_schema() -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        load_batch_request({"calls": [call(priority=0), call(priority=10)], "priority": -1})
    assert set(details_of(excinfo)) == {"calls[1].priority", "priority"}


def test_every_bad_call_is_named() -> None:
    calls = [call() for _ in range(5)]
    calls[1]["priority"] = "high"
    calls[3].pop("script")
    calls[4]["extra"] = 1
    with pytest.raises(InvalidRequest) as excinfo:
        load_batch_request({"calls": calls})
    assert details_of(excinfo) == {
        "calls[1].priority": ["Not a valid integer."],
        "calls[3].script": ["Missing data for required field."],
        "calls[4].extra": ["Unknown field."],
    }
    assert excinfo.value.message.startswith("Invalid request: calls[1].priority")


def test_metadata_is_limited_to_16_kb() -> None:
    def metadata_of_size(size: int) -> dict[str, str]:
        overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
        return {"k": "x" * (size - overhead)}

    fits = load_batch_request({"calls": [call()], "metadata": metadata_of_size(MAX_METADATA_BYTES)})
    assert len(fits["metadata"]["k"]) > 16_000
    with pytest.raises(InvalidRequest) as excinfo:
        load_batch_request({"calls": [call()], "metadata": metadata_of_size(MAX_METADATA_BYTES + 1)})
    assert list(details_of(excinfo)) == ["metadata"]


def nested(depth: int, *, kind: str = "object") -> Any:
    """`depth` objects (or arrays) nested in one another, built without recursion."""
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value} if kind == "object" else [value]
    return value


@pytest.mark.parametrize("kind", ["object", "array"])
def test_metadata_nests_at_most_8_deep(kind: str) -> None:
    # The metadata object is the first level.
    fits = load_batch_request({"calls": [call()], "metadata": {"a": nested(MAX_METADATA_DEPTH - 1, kind=kind)}})
    assert fits["metadata"]["a"] == nested(MAX_METADATA_DEPTH - 1, kind=kind)
    for depth in (MAX_METADATA_DEPTH, 980, 50_000):  # 980 deep was a RecursionError (500)
        with pytest.raises(InvalidRequest) as excinfo:
            load_batch_request({"calls": [call()], "metadata": {"a": nested(depth, kind=kind)}})
        assert type(excinfo.value) is InvalidRequest
        assert details_of(excinfo) == {"metadata": [f"Must nest objects and arrays at most {MAX_METADATA_DEPTH} deep."]}


def test_nesting_depth_counts_without_recursion_and_stops_early() -> None:
    assert [nesting_depth(v, at_most=8) for v in ("x", 3, None, {}, [], {"a": [1, {"b": {}}]}, [[], [[[]]]])] == [
        0,
        0,
        0,
        1,
        1,
        4,
        4,
    ]
    assert nesting_depth(nested(100_000), at_most=8) == 9


@pytest.mark.parametrize("url", [None, "https://crm.example.com/hooks/batch", "http://localhost:8080/hook"])
def test_callback_url_is_kept(url: str | None) -> None:
    body = with_valid_numbers(SEED_BASIC)
    body["callback_url"] = url
    assert build(body).callback_url == url


def test_flatten_errors_names_paths() -> None:
    messages = {
        "calls": {3: {"script": {"steps": {0: ["Not a valid mapping type."]}}}},
        "retry_config": {"delay": ["Not a valid number."]},
        "_schema": ["Invalid input type."],
    }
    assert flatten_errors(messages) == {
        "calls[3].script.steps[0]": ["Not a valid mapping type."],
        "retry_config.delay": ["Not a valid number."],
        "body": ["Invalid input type."],
    }


# --- Phone numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        (UK, UK),
        (US, US),
        ("+44 20 7946 0000", UK),
        ("+44 (0)20 7946-0000", UK),  # the library drops the national prefix
        (" +1 415.555.2671 ", US),
        ("+5491123456789", "+5491123456789"),  # Argentina: always decided by the library
    ],
)
def test_valid_numbers_come_out_in_e164(raw: str, e164: str) -> None:
    assert normalize_phone_number(raw) == e164


@pytest.mark.parametrize(
    "raw",
    [
        "+1234567890",
        "+0987654321",
        "442079460000",  # no +
        "02079460000",  # national form
        "+44207946000",  # a digit short
        "+1 800 FLOWERS",  # letters
        "+442079460000 ext 12",  # extension
        "+",
        "",
        "+999123456789",  # no such country code
    ],
)
def test_invalid_numbers_are_rejected(raw: str) -> None:
    assert normalize_phone_number(raw) is None


def test_every_invalid_number_is_named_with_its_reason() -> None:
    body = {"calls": [call(phone_number=n) for n in (UK, "02079460000", US, "+1234567890")]}
    with pytest.raises(InvalidPhoneNumber) as excinfo:
        build(body)
    details = details_of(excinfo)
    assert set(details) == {"calls[1].phone_number", "calls[3].phone_number"}
    assert "international" in details["calls[1].phone_number"][0]
    assert details["calls[3].phone_number"] == ["is not a valid phone number"]


# --- Scripts and voices ----------------------------------------------------------------------


def test_script_problems_are_invalid_script_with_paths() -> None:
    body = {
        "calls": [
            call(script={"text": ""}),
            call(script={"text": "   "}),
            call(script={"steps": [{"text": "ok"}, {"text": "x" * (MAX_TEXT_CHARS + 1)}]}),
            call(script={"type": "survey", "steps": [{"type": "dtmf", "text": "Press 1"}]}),
            call(script={"steps": []}),
            call(script={}),
            call(script={"type": "x"}),
            call(script={"text": "a", "steps": [{"text": "b"}]}),
            call(script={"steps": [{}]}),
            call(script={"steps": [{"text": 5}]}),
            call(script={"steps": [{"text": "a", "ssml": True}]}),
            call(voice_id="voice_robot_9"),
            call(script={"text": "x" * MAX_TEXT_CHARS}, voice_id="voice_male_1"),
        ],
        "dedupe": False,  # every call is to the one number
    }
    with pytest.raises(InvalidScript) as excinfo:
        build(body)
    assert excinfo.value.code == "invalid_script"
    assert set(details_of(excinfo)) == {
        "calls[0].script.text",
        "calls[1].script.text",
        "calls[2].script.steps[1].text",
        "calls[3].script.steps[0].type",
        "calls[4].script.steps",
        "calls[5].script",
        "calls[6].script",
        "calls[7].script",
        "calls[8].script.steps[0].text",
        "calls[9].script.steps[0].text",
        "calls[10].script.steps[0].ssml",
        "calls[11].voice_id",
    }


def test_text_steps_may_name_their_type() -> None:
    script = {"type": "sales_call", "steps": [{"type": "text", "text": "a"}, {"text": "b"}]}
    assert script_problems_by_path(script) == {}
    assert normalize_script(script) == {
        "type": "sales_call",
        "steps": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    assert normalize_script({"text": "a"}) == {"type": None, "steps": [{"type": "text", "text": "a"}]}


def test_script_problems_are_keyed_by_their_path_in_the_script() -> None:
    problems = script_problems_by_path({"steps": [{"text": ""}, {"type": "video"}]})
    assert problems["steps[0].text"] == ["must not be empty"]
    assert problems["steps[1].type"][0].startswith("unknown step type 'video'")
    assert script_problems_by_path({}) == {"": ["needs text or steps"]}


def test_an_unknown_step_type_is_shown_cut_short() -> None:
    long_type = "v" * 1_000_000
    with pytest.raises(InvalidScript) as excinfo:
        build({"calls": [call(script={"steps": [{"type": long_type, "text": "Hi"}]})]})
    (message,) = details_of(excinfo)["calls[0].script.steps[0].type"]
    assert message.startswith(f"unknown step type {'v' * SHOWN_TYPE_CHARS!r}... (1000000 characters); known:")
    assert len(excinfo.value.message) < 300


@pytest.mark.parametrize("step_type", [7, None, ["text"], {"a": "text"}, nested(900, kind="array")])
def test_a_step_type_that_is_not_a_string_is_invalid_script_and_not_repeated(step_type: Any) -> None:
    with pytest.raises(InvalidScript) as excinfo:
        build({"calls": [call(script={"steps": [{"type": step_type, "text": "Hi"}]})]})
    assert details_of(excinfo) == {
        "calls[0].script.steps[0].type": ["must be a string naming a step type; known: agent, input, text"]
    }


def test_a_script_holds_at_most_50_steps() -> None:
    steps = [{"text": f"Step {i}."} for i in range(MAX_STEPS)]
    assert len(build({"calls": [call(script={"steps": steps})]}).calls[0].script["steps"]) == MAX_STEPS
    for count in (MAX_STEPS + 1, 50_000):
        many = [{"text": "Hi"}] * count
        with pytest.raises(InvalidScript) as excinfo:
            build({"calls": [call(), call(script={"steps": many})], "dedupe": False})
        assert details_of(excinfo) == {
            "calls[1].script.steps": [f"must hold at most {MAX_STEPS} steps (it has {count})"]
        }
    # Too many steps, none of them an object: still the one problem, not one per step.
    with pytest.raises(InvalidScript) as excinfo:
        build({"calls": [call(script={"steps": ["Hi"] * 50_000})]})
    assert list(details_of(excinfo)) == ["calls[0].script.steps"]


def test_a_scripts_type_is_at_most_64_characters() -> None:
    assert build({"calls": [call(script={"type": "t" * MAX_SCRIPT_TYPE_CHARS, "text": "Hi"})]})
    with pytest.raises(InvalidScript) as excinfo:
        build({"calls": [call(script={"type": "t" * 1_000_000, "text": "Hi"})]})
    assert details_of(excinfo) == {
        "calls[0].script.type": [f"must be at most {MAX_SCRIPT_TYPE_CHARS} characters (it has 1000000)"]
    }


# --- Concurrency, retry, priority and the order of checks ------------------------------------


@pytest.mark.parametrize(("concurrency", "maximum"), [(0, 100), (-1, 100), (101, 100), (6, 5)])
def test_concurrency_outside_the_limit(concurrency: int, maximum: int) -> None:
    with pytest.raises(ConcurrencyLimit) as excinfo:
        build({"calls": [call()], "concurrency": concurrency}, max_concurrency=maximum)
    assert excinfo.value.code == "concurrency_limit"
    assert list(details_of(excinfo)) == ["concurrency"]


def test_concurrency_defaults_to_10_capped_by_the_maximum() -> None:
    assert build({"calls": [call()]}).concurrency == 10
    assert build({"calls": [call()]}, max_concurrency=4).concurrency == 4
    assert build({"calls": [call()], "concurrency": 100}).concurrency == 100
    assert build({"calls": [call()], "concurrency": 1}).concurrency == 1


def test_bad_retry_config_names_every_bad_field() -> None:
    body = {
        "calls": [call()],
        "retry_config": {
            "max_attempts": 11,
            "delay": -1,
            "backoff_multiplier": 0.5,
            "retry_on": ["busy", "completed", "voicemail"],
        },
    }
    with pytest.raises(InvalidRequest) as excinfo:
        build(body)
    assert type(excinfo.value) is InvalidRequest
    assert set(details_of(excinfo)) == {
        "retry_config.max_attempts",
        "retry_config.delay",
        "retry_config.backoff_multiplier",
        "retry_config.retry_on[1]",
        "retry_config.retry_on[2]",
    }


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"max_attempts": 0}, "retry_config.max_attempts"),
        ({"max_attempts": 11}, "retry_config.max_attempts"),
        ({"delay": -0.5}, "retry_config.delay"),
        ({"backoff_multiplier": 0.99}, "retry_config.backoff_multiplier"),
        ({"retry_on": ["invalid_number"]}, "retry_config.retry_on[0]"),
    ],
)
def test_each_retry_rule(config: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        build({"calls": [call()], "retry_config": config})
    assert list(details_of(excinfo)) == [path]


def test_retry_config_becomes_the_policy() -> None:
    config = {"max_attempts": 10, "delay": 0, "backoff_multiplier": 3, "retry_on": ["machine"]}
    policy = build({"calls": [call()], "retry_config": config}).retry
    assert policy == RetryPolicy(max_attempts=10, delay=0, backoff_multiplier=3, retry_on=frozenset({Outcome.MACHINE}))
    assert build({"calls": [call()], "retry_config": {}}).retry == RetryPolicy()


def test_priority_defaults_from_batch_then_product() -> None:
    batch = build({"calls": [call(), call(priority=0)], "priority": 2, "dedupe": False})
    assert batch.priority == 2
    assert [c.priority for c in batch.calls] == [2, 0]
    batch = build({"calls": [call(), call(priority=9)], "dedupe": False})
    assert batch.priority == DEFAULT_PRIORITY
    assert [c.priority for c in batch.calls] == [DEFAULT_PRIORITY, 9]


def test_metadata_is_kept() -> None:
    assert build({"calls": [call()], "metadata": {"crm_id": 42}}).metadata == {"crm_id": 42}


def test_checks_run_in_order() -> None:
    bad_everything: dict[str, Any] = {
        "calls": [call(phone_number="+1234567890", script={"text": ""})],
        "concurrency": 0,
        "retry_config": {"max_attempts": 0},
    }
    with pytest.raises(InvalidPhoneNumber):
        build(bad_everything)
    bad_everything["calls"][0]["phone_number"] = UK
    with pytest.raises(InvalidScript):
        build(bad_everything)
    bad_everything["calls"][0]["script"] = {"text": "Hello."}
    with pytest.raises(ConcurrencyLimit):
        build(bad_everything)
    bad_everything["concurrency"] = 1
    with pytest.raises(InvalidRequest) as excinfo:
        build(bad_everything)
    assert type(excinfo.value) is InvalidRequest
    bad_everything["retry_config"] = {"max_attempts": 2}
    assert build(bad_everything).retry.max_attempts == 2


def test_warm_up_leaves_no_region_to_compile_on_a_request() -> None:
    validation.warm_up()
    examples = [
        phonenumbers.format_number(phonenumbers.example_number(region), phonenumbers.PhoneNumberFormat.E164)
        for region in ("GB", "US", "IN", "BR", "JP", "NG", "DE", "AU")
    ]
    with mock.patch("re.compile", side_effect=AssertionError("compiled during a request")):
        assert all(validation.normalize_phone_number(number) == number for number in examples)


def _neighbours(number: phonenumbers.PhoneNumber) -> list[phonenumbers.PhoneNumber]:
    """The number, and numbers near it: last digits changed, a digit more, a digit less."""
    digits = str(number.national_number)
    variants = {digits, digits[:-1], digits + "0", digits + "9"}
    variants |= {digits[:-1] + d for d in "0123456789"}
    variants |= {digits[:-2] + d + digits[-1] for d in "0123456789"} if len(digits) > 2 else set()
    return [phonenumbers.PhoneNumber(country_code=number.country_code, national_number=int(v)) for v in variants if v]


def test_is_valid_number_agrees_with_phonenumbers_on_every_region_and_its_neighbours() -> None:
    examples = [
        phonenumbers.example_number_for_type(region, kind)
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for kind in phonenumbers.PhoneNumberType.values()
    ]
    examples += [
        phonenumbers.example_number_for_non_geo_entity(cc)
        for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    ]
    checked = valid = 0
    for example in examples:
        if example is None:
            continue
        for number in _neighbours(example):
            ours, theirs = validation.is_valid_number(number), phonenumbers.is_valid_number(number)
            assert ours == theirs, (
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
                ours,
                theirs,
            )
            checked += 1
            valid += theirs
    assert checked > 30_000 and valid > 1_000 and checked - valid > 1_000  # both answers were compared


# expires_at

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_expires_at_with_an_offset_is_kept_as_an_aware_time() -> None:
    body = load_batch_request({"calls": [call()], "expires_at": "2026-11-23T14:30:00+02:00"})
    batch = build_batch(body, max_concurrency=10, voices=VOICES, now=NOW)
    assert batch.expires_at == datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
    assert build({"calls": [call()]}).expires_at is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("tomorrow", "not an ISO 8601 date and time"),
        ("2026-11-23T14:30:00", "no UTC offset"),
        ("2026-11-24", "no UTC offset"),
        ("2026-11-23T11:59:59Z", "in the past"),
        ("2026-11-23T12:00:00+00:00", "in the past"),
    ],
)
def test_a_bad_expires_at_is_a_422_naming_it(value: str, problem: str) -> None:
    data = load_batch_request({"calls": [call()], "expires_at": value})
    with pytest.raises(InvalidRequest) as excinfo:
        build_batch(data, max_concurrency=10, voices=VOICES, now=NOW)
    assert excinfo.value.http_status == 422 and details_of(excinfo) == {"expires_at": [problem]}


@pytest.mark.parametrize("value", [1700000000, True, None, {}])
def test_expires_at_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        load_batch_request({"calls": [call()], "expires_at": value})
    assert "expires_at" in details_of(excinfo)


# start_at


def test_start_at_with_an_offset_is_kept_as_an_aware_time_past_or_future() -> None:
    for value, expected in [
        ("2026-11-23T15:00:00+02:00", datetime(2026, 11, 23, 13, 0, tzinfo=UTC)),
        ("2026-11-23T11:00:00Z", datetime(2026, 11, 23, 11, 0, tzinfo=UTC)),  # past: the batch starts now
    ]:
        body = load_batch_request({"calls": [call()], "start_at": value})
        assert build_batch(body, max_concurrency=10, voices=VOICES, now=NOW).start_at == expected
    assert build({"calls": [call()]}).start_at is None
    before = {"calls": [call()], "start_at": "2026-11-23T13:00:00Z", "expires_at": "2026-11-23T13:00:01Z"}
    assert build_batch(load_batch_request(before), max_concurrency=10, voices=VOICES, now=NOW).start_at is not None


@pytest.mark.parametrize(
    ("value", "expires_at", "problem"),
    [
        ("soon", None, "not an ISO 8601 date and time"),
        ("2026-11-23T14:30:00", None, "no UTC offset"),
        ("2026-11-24", None, "no UTC offset"),
        ("2026-11-23T13:00:00Z", "2026-11-23T13:00:00Z", "not before expires_at"),
        ("2026-11-23T15:00:00+01:00", "2026-11-23T13:00:00Z", "not before expires_at"),
    ],
)
def test_a_bad_start_at_is_a_422_naming_it(value: str, expires_at: str | None, problem: str) -> None:
    body: dict[str, Any] = {"calls": [call()], "start_at": value}
    if expires_at is not None:
        body["expires_at"] = expires_at
    with pytest.raises(InvalidRequest) as excinfo:
        build_batch(load_batch_request(body), max_concurrency=10, voices=VOICES, now=NOW)
    assert excinfo.value.http_status == 422 and details_of(excinfo) == {"start_at": [problem]}


@pytest.mark.parametrize("value", [1700000000, True, None, {}])
def test_start_at_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        load_batch_request({"calls": [call()], "start_at": value})
    assert "start_at" in details_of(excinfo)
