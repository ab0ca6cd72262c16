"""The public HTTP API (DESIGN §2) through the real Flask app on real PostgreSQL and Redis.

Every row of §2's error table with its status, `error.code` and the fields `details` names, and
for every refused POST that nothing was stored; then the accepted paths: the status body,
Idempotency-Key (also under concurrent POSTs over real HTTP), listing and pagination, health.
Most tests use Flask's test client on an app of their own (`api_factory`, in conftest.py), with
small limits where a test needs them and always a tenant of its own.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import phonenumbers
import psycopg2.extensions
import pytest
import redis
import requests
from celery.utils.nodenames import anon_nodename
from flask import Flask
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from api import auth
from api.app import create_app
from batchcalls.adapters.store import batches as store_batches
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.migrate import upgrade
from batchcalls.adapters.store.tenants import create_key
from batchcalls.engine.reconciler import reconcile
from batchcalls.ops.embedded import EmbeddedServer, start_redis
from config.settings import load_settings
from tests.integration.conftest import Api, new_tenant
from tests.support.servers import more_test_servers

if TYPE_CHECKING:
    from tests.support.servers import TestServers

pytestmark = pytest.mark.integration

ApiFactory = Callable[..., Api]

ISO_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
CALL_STATUSES = {"queued", "scheduled", "dialing", "ringing", "in_progress", "completed", "failed", "cancelled"}
SEED_STATUS_FIELDS = {"batch_id", "total_calls", "completed_calls", "failed_calls", "in_progress", "calls"}
OUR_STATUS_FIELDS = {"status", "pending", "created_at", "started_at", "finished_at"}
CALL_FIELDS = {
    "id",
    "phone_number",
    "status",
    "outcome",
    "priority",
    "voice_id",
    "script_type",
    "responses",
    "last_error",
    "attempts",
    "metadata",
}

# The seed's two request examples, verbatim. Neither of their numbers is a valid phone number.
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
            "script": {"type": "sales_call", "steps": [{"text": "Hello, I'm calling about our new product."}]},
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
VALID_NUMBERS = ("+442079460000", "+14155552671")


def number(i: int) -> str:
    """A valid UK number per index (0 <= i < 10,000); the simulator answers it."""
    return f"+44207946{i:04d}"


def call(i: int = 0, **fields: Any) -> dict[str, Any]:
    return {"phone_number": number(i), "script": {"text": f"Hello {i}."}, **fields}


def batch(n: int = 1, **fields: Any) -> dict[str, Any]:
    return {"calls": [call(i) for i in range(n)], **fields}


def with_calls(*calls: Any, **fields: Any) -> dict[str, Any]:
    return {"calls": list(calls), **fields}


def assert_error(
    response: TestResponse | requests.Response, status: int, code: str, fields: set[str] | None = None
) -> dict[str, Any]:
    """The response is `status` with the one error shape, `code`, and details naming `fields`."""
    text = response.get_data(as_text=True) if isinstance(response, TestResponse) else response.text
    assert response.status_code == status, text
    assert response.headers["Content-Type"] == "application/json", text
    payload = json.loads(text)
    assert list(payload) == ["error"]
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    if fields is not None:
        assert isinstance(error["details"], dict), error
        assert set(error["details"]) == fields, error["details"]
        for messages in error["details"].values():
            assert messages and all(isinstance(m, str) and m for m in messages), error["details"]
    return error


def broker_queues(api: Api) -> list[str]:
    """The Redis lists of the app's Celery broker: the default queue under each priority step
    (kombu names step 0 `celery`, step n `celery<sep>n`)."""
    conf = api.app.extensions["batchcalls.engine"].tasks.app.conf
    options = conf.broker_transport_options
    queue = conf.task_default_queue
    return [queue] + [f"{queue}{options['sep']}{step}" for step in options["priority_steps"] if step]


def sent_by_this_process(api: Api) -> list[str]:
    """The ids of the task messages waiting in the broker that this process (the app under test
    runs in it) published: Celery stamps each with `origin` gen<pid>@<host>. Worker and beat
    processes of other tests publish under their own pid."""
    origin = anon_nodename()
    ids = []
    for queue in broker_queues(api):
        for raw in api.redis.lrange(queue, 0, -1):
            message = json.loads(raw)
            if message["headers"].get("origin") == origin:
                ids.append(message["headers"]["id"])
    return ids


def gate_keys(api: Api) -> set[str]:
    """Every per-batch key of the gates (`bc:{batch_id}:...`, see batchcalls/adapters/redis_keys.py); not the
    event inbox's `bc:{events-N}:...`, which worker processes of other tests keep using."""
    return {key.decode() for key in api.redis.scan_iter(match="bc:{batch_*}:*", count=1000)}


def unknown_batches(api: Api, keys: set[str]) -> set[str]:
    """The batch ids of `keys` that Postgres has no batch for. (A reconciler of another test's
    worker processes may rebuild the gates of a stored batch meanwhile; nothing may name one
    that does not exist.)"""
    named = {key.split("{", 1)[1].split("}", 1)[0] for key in keys}
    with api.pg.cursor() as cur:
        cur.execute("SELECT id FROM batches WHERE id = ANY(%s)", (list(named),))
        stored = {row[0] for row in cur.fetchall()}
    return named - stored


def assert_refused(
    api: Api,
    status: int,
    code: str,
    fields: set[str] | None = None,
    *,
    body: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> TestResponse:
    """POST is refused as stated, and nothing was stored or enqueued for it: the tenant's batches
    and calls are what they were, no gate key of a new batch appeared in Redis, and the app
    published no task message to the broker."""
    before = api.stored()
    keys_before = gate_keys(api)
    sent_before = sent_by_this_process(api)
    response = api.post(body, data=data, headers=headers)
    assert_error(response, status, code, fields)
    assert api.stored() == before
    new_keys = gate_keys(api) - keys_before
    assert unknown_batches(api, new_keys) == set(), f"gate keys of a batch that was refused: {new_keys}"
    enqueued = set(sent_by_this_process(api)) - set(sent_before)
    assert enqueued == set(), f"a refused POST enqueued {enqueued}"
    return response


def accepted(api: Api, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = api.post(body, headers=headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    result: dict[str, Any] = response.get_json()
    return result


def test_an_accepted_post_shows_in_the_gates_and_the_broker_that_assert_refused_watches(api: Api) -> None:
    """What `assert_refused` looks for is there when a batch is accepted: its gate keys in the
    app's Redis and its dispatch task in the app's broker queue (otherwise those checks would
    pass for any POST)."""
    keys_before = gate_keys(api)
    sent_before = set(sent_by_this_process(api))
    batch_id = accepted(api, batch(2))["batch_id"]
    assert {key for key in gate_keys(api) - keys_before if "{" + batch_id + "}" in key} >= {
        f"bc:{{{batch_id}}}:meta",
        f"bc:{{{batch_id}}}:ready",
    }
    assert unknown_batches(api, {f"bc:{{{batch_id}}}:meta", "bc:{batch_never_stored}:meta"}) == {"batch_never_stored"}
    new = set(sent_by_this_process(api)) - sent_before
    assert len(new) == 1, new
    dispatches = [json.loads(raw) for queue in broker_queues(api) for raw in api.redis.lrange(queue, 0, -1)]
    sent = [m for m in dispatches if m["headers"]["id"] in new]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in sent] == [
        ("batchcalls.dispatch", repr((batch_id,)))
    ]


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app on a real threaded HTTP server on 127.0.0.1."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


# -- 400 invalid_request: malformed JSON ------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"calls=1",
        b'{"calls": [}',
        b"{'calls': []}",
        b'{"calls": "\xff\xfe"}',
        b"[" * 100_000 + b"]" * 100_000,  # parses to nothing but a RecursionError
        b'{"calls": [], "metadata": {"x": NaN}}',  # NaN and Infinity are not JSON
        b'{"calls": [], "retry_config": {"delay": Infinity}}',
    ],
    ids=["empty", "unclosed", "form", "bad-list", "single-quotes", "not-utf8", "deep", "nan", "infinity"],
)
def test_malformed_json_is_400_invalid_request(api: Api, data: bytes) -> None:
    error = assert_refused(api, 400, "invalid_request", data=data).get_json()["error"]
    assert "not valid JSON" in error["message"]


# -- 422 invalid_request: wrong types, unknown fields, bad retry_config ------------------------


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ([call()], {"body"}),
        ("calls", {"body"}),
        (None, {"body"}),
        ({}, {"calls"}),
        ({"calls": None}, {"calls"}),
        ({"calls": call()}, {"calls"}),
        ({"calls": []}, {"calls"}),
        (with_calls(call(0), None, "x"), {"calls[1]", "calls[2]"}),
        (with_calls(call(0), call(1, phone_number=442079460001)), {"calls[1].phone_number"}),
        (with_calls({"script": {"text": "Hi"}}), {"calls[0].phone_number"}),
        (with_calls(call(0, script="Hello")), {"calls[0].script"}),
        (with_calls(call(0, script={"text": 5})), {"calls[0].script.text"}),
        (with_calls(call(0, script={"steps": "Hello"})), {"calls[0].script.steps"}),
        (with_calls(call(0, script={"steps": ["Hello"]})), {"calls[0].script.steps[0]"}),
        (with_calls(call(0, voice_id=1)), {"calls[0].voice_id"}),
        (with_calls(call(0), call(1, priority="high")), {"calls[1].priority"}),
        (with_calls(call(0, priority=True)), {"calls[0].priority"}),
        (batch(concurrency="5"), {"concurrency"}),
        (batch(concurrency=2.5), {"concurrency"}),
        (batch(concurrency=True), {"concurrency"}),
        (batch(priority=10), {"priority"}),
        (batch(metadata=["crm"]), {"metadata"}),
        (batch(metadata={"k": "x" * 17_000}), {"metadata"}),
        (batch(callback_url="not a url"), {"callback_url"}),
        (batch(callback_url="ftp://example.com/hook"), {"callback_url"}),
        (batch(callback_url="https://127.0.0.1/hook"), {"callback_url"}),
        (batch(callback_url="https://93.184.216.34:22/hook"), {"callback_url"}),  # a public host, not a web port
        # unknown fields, at every level
        (batch(colour="blue"), {"colour"}),
        (with_calls(call(0), call(1, name="Ann")), {"calls[1].name"}),
        (with_calls(call(0, script={"text": "Hi", "voice": "x"})), {"calls[0].script.voice"}),
        (batch(retry_config={"max_attempts": 2, "jitter": 1}), {"retry_config.jitter"}),
        # bad retry_config
        (batch(retry_config=None), {"retry_config"}),
        (batch(retry_config=[3, 300]), {"retry_config"}),
        (batch(retry_config={"max_attempts": 0}), {"retry_config.max_attempts"}),
        (batch(retry_config={"max_attempts": 11}), {"retry_config.max_attempts"}),
        (batch(retry_config={"max_attempts": 2.0}), {"retry_config.max_attempts"}),
        (batch(retry_config={"max_attempts": "3"}), {"retry_config.max_attempts"}),
        (batch(retry_config={"delay": -1}), {"retry_config.delay"}),
        (batch(retry_config={"delay": "300"}), {"retry_config.delay"}),
        (batch(retry_config={"delay": False}), {"retry_config.delay"}),
        (batch(retry_config={"backoff_multiplier": 0.5}), {"retry_config.backoff_multiplier"}),
        (batch(retry_config={"retry_on": "busy"}), {"retry_config.retry_on"}),
        (batch(retry_config={"retry_on": ["busy", "completed"]}), {"retry_config.retry_on[1]"}),
        (
            batch(retry_config={"max_attempts": 0, "delay": -5, "retry_on": ["x"]}),
            {"retry_config.max_attempts", "retry_config.delay", "retry_config.retry_on[0]"},
        ),
    ],
)
def test_wrong_types_unknown_fields_and_bad_retry_config_are_422_invalid_request(
    api: Api, body: Any, fields: set[str]
) -> None:
    assert_refused(api, 422, "invalid_request", fields, body=body)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (with_calls(call(0), call(1, script={"text": "Hi \u0000 there"})), {"calls[1].script.text"}),
        (with_calls(call(0, script={"type": "sales\u0000", "steps": [{"text": "Hi"}]})), {"calls[0].script.type"}),
        (with_calls(call(0, script={"text": "Hi \ud800"})), {"calls[0].script.text"}),
        (batch(metadata={"crm": "a\u0000b", "ok": "\U0001f600"}), {"metadata.crm"}),
        (batch(metadata={"a\u0000": 1}), {"metadata"}),
    ],
    ids=["nul-text", "nul-type", "lone-surrogate", "nul-metadata", "nul-metadata-key"],
)
def test_text_postgres_cannot_store_is_422_invalid_request(api: Api, body: Any, fields: set[str]) -> None:
    # json.dumps writes NUL and lone surrogates as \u escapes, which is how they arrive.
    assert_refused(api, 422, "invalid_request", fields, data=json.dumps(body).encode())


def test_a_body_with_an_emoji_is_stored(api: Api) -> None:
    body = with_calls(call(0, script={"text": "Hi \U0001f600"}), metadata={"note": "\u00e9\U0001f600"})
    accepted(api, json.loads(json.dumps(body)))
    assert api.stored() == (1, 1)


def test_idempotency_key_is_checked(api: Api) -> None:
    assert_refused(
        api, 422, "invalid_request", {"Idempotency-Key"}, body=batch(), headers={"Idempotency-Key": "k" * 256}
    )


# -- 422 invalid_phone_number -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [SEED_BASIC, SEED_ADVANCED], ids=["basic", "advanced"])
def test_the_seeds_examples_verbatim_name_both_invalid_numbers(api: Api, seed: dict[str, Any]) -> None:
    for raw in ("+1234567890", "+0987654321"):
        with contextlib.suppress(phonenumbers.NumberParseException):  # +0...: no country code starts with 0
            assert not phonenumbers.is_valid_number(phonenumbers.parse(raw))
    assert_refused(api, 422, "invalid_phone_number", {"calls[0].phone_number", "calls[1].phone_number"}, body=seed)


def test_each_invalid_phone_number_is_named_by_its_index(api: Api) -> None:
    calls = [call(i) for i in range(7)]
    calls[1]["phone_number"] = "02079460001"  # national form
    calls[3]["phone_number"] = "+44 20 7946 000x"
    calls[4]["phone_number"] = "+999123456"  # no such country code
    calls[6]["phone_number"] = ""
    calls[5]["phone_number"] = "+44 (20) 7946-0005"  # separators are fine
    response = assert_refused(
        api,
        422,
        "invalid_phone_number",
        {"calls[1].phone_number", "calls[3].phone_number", "calls[4].phone_number", "calls[6].phone_number"},
        body=with_calls(*calls),
    )
    assert "calls[1].phone_number" in response.get_json()["error"]["message"]


def test_phone_numbers_are_judged_before_scripts(api: Api) -> None:
    body = with_calls(call(0, phone_number="+1234567890", script={"text": ""}))
    assert_refused(api, 422, "invalid_phone_number", {"calls[0].phone_number"}, body=body)


# -- 422 invalid_script -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (with_calls(call(0), {"phone_number": number(1)}), {"calls[1].script"}),  # missing
        (with_calls({"phone_number": number(0)}, {"phone_number": number(1)}), {"calls[0].script", "calls[1].script"}),
        (with_calls(call(0, script={})), {"calls[0].script"}),
        (with_calls(call(0, script={"type": "sales_call"})), {"calls[0].script"}),
        (with_calls(call(0, script={"text": ""})), {"calls[0].script.text"}),
        (with_calls(call(0, script={"text": "   "})), {"calls[0].script.text"}),
        (with_calls(call(0, script={"steps": []})), {"calls[0].script.steps"}),
        (with_calls(call(0, script={"steps": [{"text": "ok"}, {"text": ""}]})), {"calls[0].script.steps[1].text"}),
        (with_calls(call(0), call(1, script={"text": "x" * 1501})), {"calls[1].script.text"}),
        (with_calls(call(0, script={"steps": [{"text": "y" * 1501}]})), {"calls[0].script.steps[0].text"}),
        (
            with_calls(call(0, script={"steps": [{"type": "dtmf", "text": "Press 1"}]})),
            {"calls[0].script.steps[0].type"},
        ),
        (with_calls(call(0, script={"steps": [{"type": 7, "text": "Hi"}]})), {"calls[0].script.steps[0].type"}),
        (with_calls(call(0, script={"text": "a", "steps": [{"text": "b"}]})), {"calls[0].script"}),
        (with_calls(call(0, voice_id="voice_robot_9")), {"calls[0].voice_id"}),
        (with_calls(call(0, voice_id="voice_male_1"), call(1, voice_id="")), {"calls[1].voice_id"}),
        (with_calls(call(0, script={"steps": [{"text": "Hi"}] * 51})), {"calls[0].script.steps"}),
        (with_calls(call(0, script={"steps": [{"text": "Hi"}] * 50_000})), {"calls[0].script.steps"}),
        (with_calls(call(0, script={"type": "t" * 65, "text": "Hi"})), {"calls[0].script.type"}),
    ],
    ids=[
        "missing",
        "missing-twice",
        "empty-object",
        "no-text-or-steps",
        "empty-text",
        "blank-text",
        "no-steps",
        "empty-step",
        "text-1501",
        "step-1501",
        "unknown-step-type",
        "step-type-not-a-string",
        "text-and-steps",
        "unknown-voice",
        "empty-voice",
        "51-steps",
        "50000-steps",
        "script-type-65",
    ],
)
def test_script_and_voice_errors_are_422_invalid_script(api: Api, body: Any, fields: set[str]) -> None:
    assert_refused(api, 422, "invalid_script", fields, body=body)


DEEP = "__deep__"


def deep_json(depth: int, kind: str) -> str:
    """`depth` arrays (or objects) nested in one another, as JSON text."""
    if kind == "array":
        return "[" * depth + '"x"' + "]" * depth
    return '{"a":' * depth + '"x"' + "}" * depth


# Bodies holding DEEP at each place a JSON value can go, with the field a refusal names.
DEEP_PLACES = {
    "metadata": (batch(metadata={"a": DEEP}), "metadata"),
    "call": (with_calls(DEEP), "calls[0]"),
    "phone": (with_calls({"phone_number": DEEP, "script": {"text": "Hi"}}), "calls[0].phone_number"),
    "script": (with_calls(call(0, script=DEEP)), "calls[0].script"),
    "text": (with_calls(call(0, script={"text": DEEP})), "calls[0].script.text"),
    "script-type": (with_calls(call(0, script={"type": DEEP, "steps": [{"text": "Hi"}]})), "calls[0].script.type"),
    "steps": (with_calls(call(0, script={"steps": DEEP})), "calls[0].script.steps"),
    "step": (with_calls(call(0, script={"steps": [DEEP]})), "calls[0].script.steps[0]"),
    "step-type": (
        with_calls(call(0, script={"steps": [{"type": DEEP, "text": "Hi"}]})),
        "calls[0].script.steps[0].type",
    ),
    "step-text": (with_calls(call(0, script={"steps": [{"text": DEEP}]})), "calls[0].script.steps[0].text"),
    "dtmf": (with_calls(call(0, script={"steps": [{"type": "input", "dtmf": DEEP}]})), "calls[0].script.steps[0].dtmf"),
    "agent-headers": (
        with_calls(call(0, script={"steps": [{"type": "agent", "url": "wss://a.example/x", "headers": DEEP}]})),
        "calls[0].script.steps[0].headers",
    ),
    "voice": (with_calls(call(0, voice_id=DEEP)), "calls[0].voice_id"),
    "retry_on": (batch(retry_config={"retry_on": DEEP}), "retry_config.retry_on"),
    "callback": (batch(callback_url=DEEP), "callback_url"),
    "unknown": (batch(extra=DEEP), "extra"),
}


@pytest.mark.parametrize("kind", ["array", "object"])
def test_deeply_nested_values_anywhere_in_the_body_are_refused_naming_the_field(api: Api, kind: str) -> None:
    """Never a 500 (RecursionError), never the value echoed back: 400 when the body is too deep to
    parse at all, else 422 naming the field. The depths around the parser's limit are where a
    value parses and then broke whatever walked it recursively (metadata 940 deep was a 500)."""
    for depth in (9, 100, *range(880, 1001, 3), 5000):
        for place, (body, field) in DEEP_PLACES.items():
            data = json.dumps(body).replace(json.dumps(DEEP), deep_json(depth, kind)).encode()
            response = api.post(data=data)
            text = response.get_data(as_text=True)
            assert response.status_code in (400, 422), (depth, place, text[:500])
            assert len(text) < 10_000, (depth, place, text[:500])
            if response.status_code == 422:
                details = response.get_json()["error"]["details"]
                assert any(path == field or path.startswith((field + ".", field + "[")) for path in details), (
                    depth,
                    place,
                    details,
                )
    assert api.stored() == (0, 0)


def test_an_unknown_step_type_of_1_mb_is_named_cut_short(api: Api) -> None:
    body = with_calls(call(0, script={"steps": [{"type": "v" * 1_000_000, "text": "Hi"}]}))
    response = assert_refused(api, 422, "invalid_script", {"calls[0].script.steps[0].type"}, body=body)
    assert len(response.get_data()) < 1000
    assert "(1000000 characters)" in response.get_json()["error"]["message"]


def test_a_missing_script_among_other_shape_errors_is_invalid_request(api: Api) -> None:
    body = with_calls({"phone_number": number(0)}, call(1, priority="high"))
    assert_refused(api, 422, "invalid_request", {"calls[0].script", "calls[1].priority"}, body=body)


def test_texts_of_1500_characters_and_catalog_voices_are_accepted(api: Api) -> None:
    body = with_calls(
        call(0, script={"text": "x" * 1500}, voice_id="voice_female_2"),
        call(1, script={"type": "survey", "steps": [{"type": "text", "text": "y" * 1500}]}, voice_id="voice_male_de"),
    )
    status = accepted(api, body)
    assert status["total_calls"] == 2
    calls = api.get(f"/v1/batches/{status['batch_id']}/calls").get_json()["calls"]
    assert [c["voice_id"] for c in calls] == ["voice_female_2", "voice_male_de"]
    assert [c["script_type"] for c in calls] == [None, "survey"]


# -- 422 concurrency_limit --------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [0, -1, 6, 1_000_000])
def test_concurrency_outside_1_to_the_maximum_is_422_concurrency_limit(
    api_factory: ApiFactory, concurrency: int
) -> None:
    api = api_factory(BATCHCALLS_MAX_CONCURRENCY="5")
    assert_refused(api, 422, "concurrency_limit", {"concurrency"}, body=batch(2, concurrency=concurrency))


def test_concurrency_up_to_the_maximum_is_accepted_and_the_default_is_capped(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_MAX_CONCURRENCY="5")
    assert accepted(api, batch(2, concurrency=5))["concurrency"] == 5
    assert accepted(api, batch(2, concurrency=1))["concurrency"] == 1
    assert accepted(api, batch(2))["concurrency"] == 5  # the default 10, capped by the maximum
    default = accepted(api_factory(), batch(2))
    assert default["concurrency"] == 10
    assert default["retry_config"] == {
        "max_attempts": 1,
        "delay": 60.0,
        "backoff_multiplier": 1.0,
        "retry_on": ["busy", "failed", "no_answer"],
    }


# -- 429 rate_limited -------------------------------------------------------------------------


RATE_LIMIT_FIELD = re.compile(r'"(?P<policy>[a-z-]+)";r=(?P<r>\d+);t=(?P<t>\d+)')


def standing(response: TestResponse) -> tuple[str, str, int, int]:
    """(RateLimit-Policy, the policy RateLimit names, r, t) of an answer (IETF draft fields)."""
    match = RATE_LIMIT_FIELD.fullmatch(response.headers["RateLimit"])
    assert match, response.headers["RateLimit"]
    return (response.headers["RateLimit-Policy"], match["policy"], int(match["r"]), int(match["t"]))


def some_address() -> str:
    """A client address of this test's own, so that no other test (or run) spent its budget."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def from_address(
    api: Api, address: str, key: str, path: str = "/v1/batches", headers: dict[str, str] | None = None
) -> TestResponse:
    return api.client.get(
        path, headers={"Authorization": f"Bearer {key}", **(headers or {})}, environ_base={"REMOTE_ADDR": address}
    )


def test_too_many_requests_for_one_tenant_is_429_whichever_of_its_keys(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_RATE_LIMIT="3 per minute")
    _, second_key = create_key(Database(api.pg.dsn), api.tenant.name)  # another key of the same tenant
    # The budget is the tenant's across every route and every key, whatever the answers were.
    first = api.get("/v1/batches")
    assert first.status_code == 200
    assert standing(first)[:3] == ('"tenant";q=3;w=60', "tenant", 2)
    assert 1 <= standing(first)[3] <= 60
    assert api.post(batch(concurrency=0)).status_code == 422
    third = api.client.get("/v1/batches/batch_nosuchbatch", headers={"Authorization": f"Bearer {second_key}"})
    assert third.status_code == 404 and standing(third)[2] == 0
    for _ in range(3):
        assert api.client.get("/healthz").status_code == 200  # not counted, never limited
    response = assert_refused(api, 429, "rate_limited", body=batch())
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert standing(response)[:3] == ('"tenant";q=3;w=60', "tenant", 0)
    assert int(response.headers["Retry-After"]) >= standing(response)[3]
    assert_error(api.get("/v1/batches"), 429, "rate_limited")
    assert_error(api.client.get("/v1/batches", headers={"Authorization": f"Bearer {second_key}"}), 429, "rate_limited")
    # Another tenant on the same app has its own budget.
    _, other_key = new_tenant(api.pg.dsn)
    response = api.client.get("/v1/batches", headers={"Authorization": f"Bearer {other_key}"})
    assert response.status_code == 200
    assert standing(response)[2] == 2


def test_a_flood_of_invalid_keys_from_one_address_is_429_before_any_key_is_looked_up(
    api_factory: ApiFactory,
) -> None:
    api = api_factory(BATCHCALLS_AUTH_FAILURE_LIMIT="5 per minute")
    address = some_address()
    for i in range(5):
        response = from_address(api, address, "bc_live_" + secrets.token_urlsafe(30))
        assert_error(response, 401, "unauthorized")
        assert standing(response)[:3] == ('"failed-auth";q=5;w=60', "failed-auth", 4 - i)
    for key in ("bc_live_" + secrets.token_urlsafe(30), api.key):
        # Refused before the key is looked up: the valid key is refused too.
        response = from_address(api, address, key)
        error = assert_error(response, 429, "rate_limited")
        assert "address" in error["message"]
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert standing(response)[:3] == ('"failed-auth";q=5;w=60', "failed-auth", 0)
    response = api.client.post(
        "/v1/batches", json=batch(), headers=api.headers(), environ_base={"REMOTE_ADDR": address}
    )
    assert_error(response, 429, "rate_limited")
    assert api.stored() == (0, 0)
    # Another address is not affected, and a valid key does not spend the failure budget.
    other = some_address()
    assert from_address(api, other, api.key).status_code == 200
    assert_error(from_address(api, other, "bc_live_" + secrets.token_urlsafe(30)), 401, "unauthorized")


def test_concurrent_invalid_keys_from_one_address_get_no_more_key_lookups_than_the_budget(
    api_factory: ApiFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """50 requests in flight at once with random keys against a budget of 10: each lookup waits
    until every other request has either started its own lookup or been answered, so that a
    check made apart from the count would let all 50 through."""
    api = api_factory(BATCHCALLS_AUTH_FAILURE_LIMIT="10 per minute")
    address, requests_sent = some_address(), 50
    real_lookup = auth.tenant_for_key
    progress = threading.Condition()
    counts = {"looked_up": 0, "answered": 0}

    def counted_lookup(db: Database, key: str) -> object:
        with progress:
            counts["looked_up"] += 1
            progress.notify_all()
            progress.wait_for(lambda: counts["looked_up"] + counts["answered"] >= requests_sent, timeout=30)
        return real_lookup(db, key)

    monkeypatch.setattr(auth, "tenant_for_key", counted_lookup)
    answers: list[int] = []

    def one_request() -> None:
        client = api.app.test_client()
        response = client.get(
            "/v1/batches",
            headers={"Authorization": f"Bearer bc_live_{secrets.token_urlsafe(30)}"},
            environ_base={"REMOTE_ADDR": address},
        )
        with progress:
            answers.append(response.status_code)
            counts["answered"] += 1
            progress.notify_all()

    threads = [threading.Thread(target=one_request) for _ in range(requests_sent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == requests_sent
    assert counts["looked_up"] <= 10
    assert sorted(answers) == [401] * counts["looked_up"] + [429] * (requests_sent - counts["looked_up"])
    # The budget is spent: a valid key from that address is refused too, another address is not.
    assert_error(from_address(api, address, api.key), 429, "rate_limited")
    assert from_address(api, some_address(), api.key).status_code == 200


def test_valid_keys_do_not_spend_the_failure_budget(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_AUTH_FAILURE_LIMIT="3 per minute")
    address = some_address()
    for _ in range(5):
        assert from_address(api, address, api.key).status_code == 200
    answers = [from_address(api, address, "bc_live_" + secrets.token_urlsafe(30)).status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]


def test_an_ipv6_client_is_counted_by_its_64(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_AUTH_FAILURE_LIMIT="2 per minute")
    prefix = f"2001:db8:{secrets.randbelow(65536):x}:{secrets.randbelow(65536):x}"
    answers = [from_address(api, f"{prefix}::{i + 1:x}", "wrong").status_code for i in range(3)]
    assert answers == [401, 401, 429]  # a new address in the same /64 does not buy a new budget
    other = f"2001:db8:{secrets.randbelow(65536):x}:{secrets.randbelow(65536):x}::1"
    assert from_address(api, other, "wrong").status_code == 401


def test_x_forwarded_for_without_trusted_proxies_is_warned_about_once(
    api_factory: ApiFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    untrusting = api_factory()
    with caplog.at_level(logging.WARNING, logger="batchcalls.api"):
        for _ in range(3):
            from_address(untrusting, some_address(), untrusting.key, headers={"X-Forwarded-For": some_address()})
    warnings = [r for r in caplog.records if "BATCHCALLS_TRUSTED_PROXIES" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    caplog.clear()
    trusting = api_factory(BATCHCALLS_TRUSTED_PROXIES="1")
    with caplog.at_level(logging.WARNING, logger="batchcalls.api"):
        from_address(trusting, some_address(), trusting.key, headers={"X-Forwarded-For": some_address()})
        from_address(untrusting, some_address(), untrusting.key)  # no header: nothing to warn about
    assert not [r for r in caplog.records if "BATCHCALLS_TRUSTED_PROXIES" in r.getMessage()]


def test_x_forwarded_for_names_the_client_only_behind_trusted_proxies(api_factory: ApiFactory) -> None:
    untrusting = api_factory(BATCHCALLS_AUTH_FAILURE_LIMIT="2 per minute")
    address = some_address()
    answers = [
        from_address(untrusting, address, "wrong", headers={"X-Forwarded-For": some_address()}).status_code
        for _ in range(3)
    ]
    assert answers == [401, 401, 429]  # a made-up X-Forwarded-For does not buy a new budget
    behind_proxy = api_factory(BATCHCALLS_AUTH_FAILURE_LIMIT="2 per minute", BATCHCALLS_TRUSTED_PROXIES="1")
    proxy, client = some_address(), some_address()
    answers = [
        from_address(behind_proxy, proxy, "wrong", headers={"X-Forwarded-For": client}).status_code for _ in range(3)
    ]
    assert answers == [401, 401, 429]
    # Other clients behind the same proxy have their own budgets.
    assert from_address(behind_proxy, proxy, "wrong", headers={"X-Forwarded-For": some_address()}).status_code == 401
    assert (
        from_address(behind_proxy, proxy, behind_proxy.key, headers={"X-Forwarded-For": some_address()}).status_code
        == 200
    )


def test_no_redis_key_name_holds_an_api_key(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_RATE_LIMIT="1000 per minute", BATCHCALLS_AUTH_FAILURE_LIMIT="1000 per minute")
    wrong = ["bc_live_" + secrets.token_urlsafe(30) for _ in range(3)]
    assert api.get("/v1/batches").status_code == 200
    accepted(api, batch())
    for key in wrong:
        assert_error(api.client.get("/v1/batches", headers={"Authorization": f"Bearer {key}"}), 401, "unauthorized")
    names = [name.decode(errors="replace") for name in api.redis.scan_iter(count=1000)]
    assert any(name.startswith("LIMITS") for name in names)  # the budgets are there
    for key in [api.key, *wrong]:
        assert not [name for name in names if key in name or key[len("bc_live_") :] in name]


# -- 503 over_capacity ------------------------------------------------------------------------


def waiting_calls(pg: psycopg2.extensions.connection) -> int:
    """The calls not yet final, system-wide, counted as the capacity check counts them."""
    with pg.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(total_calls - completed_calls - failed_calls - cancelled_calls), 0)"
            " FROM batches WHERE status IN ('queued', 'running', 'paused')"
        )
        return int(cur.fetchone()[0])


def test_a_batch_that_would_exceed_the_waiting_calls_limit_is_503_over_capacity(
    api_factory: ApiFactory, pg: psycopg2.extensions.connection
) -> None:
    # The limit is system-wide: it is set 3 above what already waits, and the run is repeated
    # should another test's calls have finished meanwhile (only when worker processes run).
    for _ in range(3):
        waiting = waiting_calls(pg)
        api = api_factory(BATCHCALLS_MAX_QUEUED_CALLS=str(waiting + 3))
        before = api.stored()
        too_many = api.post(batch(4))
        after_too_many = api.stored()
        fits = api.post(batch(3), headers={"Idempotency-Key": "fills-it"})
        over = api.post(batch(1))
        after_over = api.stored()
        replay = api.post(batch(3), headers={"Idempotency-Key": "fills-it"})
        if waiting_calls(pg) == waiting + 3:
            break
    else:
        pytest.fail("the system-wide count of waiting calls kept changing")
    for response in (too_many, over):
        assert_error(response, 503, "over_capacity")
        assert int(response.headers["Retry-After"]) >= 1
    assert after_too_many == before
    assert fits.status_code == 202, fits.get_data(as_text=True)
    assert after_over == (1, 3)
    # Replaying an accepted batch adds no calls, so it is answered even at capacity.
    assert replay.status_code == 202 and replay.get_json()["batch_id"] == fits.get_json()["batch_id"]
    # Final calls do not count: once the batch is done, there is room again.
    with pg.cursor() as cur:
        cur.execute(
            "UPDATE calls SET status = 'completed', outcome = 'completed' WHERE batch_id = %s",
            (fits.get_json()["batch_id"],),
        )
        cur.execute(
            "UPDATE batches SET status = 'completed', completed_calls = 3, finished_at = now() WHERE id = %s",
            (fits.get_json()["batch_id"],),
        )
    assert api.post(batch(3)).status_code == 202


# -- 503 unavailable: Redis down -------------------------------------------------------------


@dataclass
class OwnRedis:
    """A Redis server of the test's own, to stop and start again on the same port."""

    directory: Path
    server: EmbeddedServer

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self.server = start_redis(self.directory, port=port)


@pytest.fixture
def api_on_own_redis(servers: TestServers, tmp_path: Path) -> Iterator[tuple[Api, OwnRedis]]:
    """An app on a fresh database (so a reconciler sweep sees only this test's batches) and a
    Redis server of its own (its gates and its broker)."""
    own = OwnRedis(tmp_path / "redis", start_redis(tmp_path / "redis"))
    try:
        with more_test_servers(servers) as fresh:
            upgrade(fresh.database_url)
            app = create_app(load_settings({"DATABASE_URL": fresh.database_url, "REDIS_URL": own.url}))
            tenant, key = create_key(Database(fresh.database_url), "own-redis")
            pg = psycopg2.connect(fresh.database_url)
            pg.autocommit = True
            try:
                yield Api(app, app.test_client(), tenant, key, pg, redis.Redis.from_url(own.url)), own
            finally:
                pg.close()
    finally:
        with contextlib.suppress(Exception):
            own.stop()


def test_a_batch_posted_while_redis_is_down_is_503_unavailable_and_not_stored(
    api_on_own_redis: tuple[Api, OwnRedis],
) -> None:
    api, own = api_on_own_redis
    assert accepted(api, batch(2))["total_calls"] == 2
    own.stop()
    response = api.post(batch(3))
    error = assert_error(response, 503, "unavailable")
    assert "nothing was stored" in error["message"]
    assert int(response.headers["Retry-After"]) >= 1
    assert api.stored() == (1, 2)
    # Once Redis is back, the same POST is accepted.
    own.start()
    assert accepted(api, batch(3))["total_calls"] == 3
    assert api.stored() == (2, 5)


def test_a_batch_stored_just_before_redis_fails_is_accepted_and_the_reconciler_queues_it(
    api_on_own_redis: tuple[Api, OwnRedis],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api, own = api_on_own_redis
    insert_batch = store_batches.insert_batch

    def insert_then_lose_redis(*args: Any, **kwargs: Any) -> Any:
        submitted = insert_batch(*args, **kwargs)
        own.stop()  # committed; Redis goes down before the batch reaches it
        return submitted

    monkeypatch.setattr(store_batches, "insert_batch", insert_then_lose_redis)
    with caplog.at_level(logging.WARNING, logger="batchcalls.engine"):
        body = accepted(api, batch(4, concurrency=2), headers={"Idempotency-Key": "redis-fails-after-commit"})
    monkeypatch.undo()
    batch_id = body["batch_id"]
    assert (body["status"], body["total_calls"]) == ("queued", 4)
    assert api.stored() == (1, 4)
    assert any("not queued" in record.getMessage() and batch_id in record.getMessage() for record in caplog.records)
    # Redis comes back empty; the reconciler's sweep finds the batch missing there and queues it.
    own.start()
    engine = api.app.extensions["batchcalls.engine"]
    assert not engine.gates.exists(batch_id)
    assert reconcile(engine).rebuilt == 1
    ready, delayed, leased = engine.gates.depth(batch_id)
    assert (ready + leased, delayed, leased) == (4, 0, 2)
    # A retry of the POST answers the same batch.
    replay = api.post(batch(4, concurrency=2), headers={"Idempotency-Key": "redis-fails-after-commit"})
    assert replay.status_code == 202 and replay.get_json()["batch_id"] == batch_id
    assert api.stored() == (1, 4)


# -- 413 payload_too_large --------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_payload_too_large(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_MAX_BODY_BYTES="2000")
    big = json.dumps(batch(40)).encode()  # valid, only too large
    assert len(big) > 2000
    assert_refused(api, 413, "payload_too_large", data=big)
    assert len(json.dumps(batch(15))) < 2000
    accepted(api, batch(15))


def post_chunked(base_url: str, key: str, payload: bytes) -> tuple[int, dict[str, Any]]:
    """POST a body with Transfer-Encoding: chunked (no Content-Length)."""
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunks = (payload[i : i + 256] for i in range(0, len(payload), 256))
        conn.request(
            "POST",
            "/v1/batches",
            body=chunks,
            encode_chunked=True,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_chunked_body_over_the_limit_is_413_not_cut_short(api_factory: ApiFactory) -> None:
    api = api_factory(BATCHCALLS_MAX_BODY_BYTES="2000")
    big, small = json.dumps(batch(40)).encode(), json.dumps(batch(15)).encode()
    with serving(api.app) as base_url:
        status, body = post_chunked(base_url, api.key, big)
        assert (status, body["error"]["code"]) == (413, "payload_too_large")
        assert api.stored() == (0, 0)
        status, body = post_chunked(base_url, api.key, small)
        assert status == 202, body
    assert api.stored() == (1, 15)


# -- 401 unauthorized and 404 -----------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer bc_live_not-a-key", "Basic {key}", "{key}", "Token {key}"],
)
def test_a_missing_or_wrong_key_is_401_unauthorized(api: Api, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization.format(key=api.key)}
    existing = accepted(api, batch())["batch_id"]
    before = api.stored()
    for response in (
        api.client.post("/v1/batches", json=batch(), headers=headers),
        api.client.get("/v1/batches", headers=headers),
        api.client.get(f"/v1/batches/{existing}", headers=headers),
        api.client.get(f"/v1/batches/{existing}/calls", headers=headers),
    ):
        assert_error(response, 401, "unauthorized")
    assert api.stored() == before


def test_a_revoked_key_is_401_unauthorized(api: Api) -> None:
    with api.pg.cursor() as cur:
        cur.execute("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = %s", (api.tenant.id,))
    assert_refused(api, 401, "unauthorized", body=batch())


def test_the_bearer_scheme_is_case_insensitive(api: Api) -> None:
    response = api.client.get("/v1/batches", headers={"Authorization": f"bearer {api.key}"})
    assert response.status_code == 200


def test_another_tenants_batch_is_404(api: Api) -> None:
    batch_id = accepted(api, batch(2))["batch_id"]
    _, other_key = new_tenant(api.pg.dsn)
    other = {"Authorization": f"Bearer {other_key}"}
    assert_error(api.client.get(f"/v1/batches/{batch_id}", headers=other), 404, "not_found")
    assert_error(api.client.get(f"/v1/batches/{batch_id}/calls", headers=other), 404, "not_found")
    assert api.client.get("/v1/batches", headers=other).get_json() == {"batches": [], "next_cursor": None}
    assert api.get(f"/v1/batches/{batch_id}").status_code == 200
    for missing in ("batch_0000000000000000000", "x\u0000y", "%27%3B--"):
        assert_error(api.get(f"/v1/batches/{missing}"), 404, "not_found")
        assert_error(api.get(f"/v1/batches/{missing}/calls"), 404, "not_found")


def test_unknown_routes_and_methods_answer_in_the_error_shape(api: Api) -> None:
    assert_error(api.get("/v1/nothing-here"), 404, "not_found")
    assert_error(api.client.delete("/v1/batches", headers=api.headers()), 405, "method_not_allowed")


# -- 202: the seed's bodies with valid numbers --------------------------------------------------


def assert_status_body(status: dict[str, Any], total: int, numbers: list[str]) -> None:
    assert set(status) >= SEED_STATUS_FIELDS | OUR_STATUS_FIELDS
    assert re.fullmatch(r"batch_\w+", status["batch_id"])
    assert status["total_calls"] == total
    assert status["status"] in {"queued", "running"}  # running only if worker processes are about
    assert status["pending"] + status["in_progress"] + status["completed_calls"] + status["failed_calls"] == total
    for name in ("created_at", "started_at", "finished_at"):
        assert status[name] is None or ISO_MS.fullmatch(status[name]), status[name]
    assert status["created_at"] is not None and status["finished_at"] is None
    # The seed's three fields, and the call's own metadata (null when the request gave none).
    assert [set(c) for c in status["calls"]] == [{"id", "status", "phone_number", "metadata"}] * len(numbers)
    assert [c["metadata"] for c in status["calls"]] == [None] * len(numbers)
    assert [c["phone_number"] for c in status["calls"]] == numbers
    assert all(c["status"] in CALL_STATUSES for c in status["calls"])
    assert len({c["id"] for c in status["calls"]}) == len(numbers)


@pytest.mark.parametrize("seed", [SEED_BASIC, SEED_ADVANCED], ids=["basic", "advanced"])
def test_the_seeds_bodies_with_valid_numbers_are_accepted(api: Api, seed: dict[str, Any]) -> None:
    body = copy.deepcopy(seed)
    for item, valid in zip(body["calls"], VALID_NUMBERS, strict=True):
        assert phonenumbers.is_valid_number(phonenumbers.parse(valid))
        item["phone_number"] = valid
    response = api.post(body)
    assert response.status_code == 202, response.get_data(as_text=True)
    status = response.get_json()
    assert response.headers["Location"] == f"/v1/batches/{status['batch_id']}"
    assert "Idempotent-Replayed" not in response.headers
    assert_status_body(status, 2, list(VALID_NUMBERS))
    assert status["concurrency"] == seed["concurrency"]
    if "retry_config" in seed:
        assert status["retry_config"]["max_attempts"] == 3 and status["retry_config"]["delay"] == 300
        assert status["retry_config"]["backoff_multiplier"] == 1
        assert status["retry_config"]["retry_on"] == ["busy", "failed", "no_answer"]
    assert api.stored() == (1, 2)

    again = api.get(f"/v1/batches/{status['batch_id']}")
    assert again.status_code == 200
    assert_status_body(again.get_json(), 2, list(VALID_NUMBERS))
    assert [c["id"] for c in again.get_json()["calls"]] == [c["id"] for c in status["calls"]]
    calls = api.get(f"/v1/batches/{status['batch_id']}/calls").get_json()["calls"]
    assert set(calls[0]) >= CALL_FIELDS
    assert [c["voice_id"] for c in calls] == [c.get("voice_id") for c in seed["calls"]]
    assert [c["script_type"] for c in calls] == [c["script"].get("type") for c in seed["calls"]]


def test_phone_numbers_are_stored_in_e164(api: Api) -> None:
    status = accepted(api, with_calls(call(0, phone_number="+44 (20) 7946-0123")))
    assert status["calls"][0]["phone_number"] == "+442079460123"


# -- Idempotency-Key --------------------------------------------------------------------------


def test_the_same_post_with_the_same_key_returns_the_first_batch(api: Api) -> None:
    body = batch(3, concurrency=2, metadata={"crm": "42"})
    key = {"Idempotency-Key": "order-42"}
    first = api.post(body, headers=key)
    assert first.status_code == 202
    second = api.post(body, headers=key)
    assert second.status_code == 202
    assert second.get_json()["batch_id"] == first.get_json()["batch_id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert [c["id"] for c in second.get_json()["calls"]] == [c["id"] for c in first.get_json()["calls"]]
    # The same JSON with its keys in another order is the same request.
    reordered = json.dumps({"metadata": {"crm": "42"}, "concurrency": 2, "calls": body["calls"]}).encode()
    third = api.post(data=reordered, headers=key)
    assert third.status_code == 202 and third.get_json()["batch_id"] == first.get_json()["batch_id"]
    assert api.stored() == (1, 3)


def test_the_same_key_with_another_body_is_409_idempotency_conflict(api: Api) -> None:
    key = {"Idempotency-Key": "order-43"}
    batch_id = accepted(api, batch(2), headers=key)["batch_id"]
    response = assert_refused(api, 409, "idempotency_conflict", {"batch_id"}, body=batch(3), headers=key)
    assert response.get_json()["error"]["details"]["batch_id"] == batch_id
    assert api.stored() == (1, 2)
    # Without the key, or with another one, the second body is a new batch.
    accepted(api, batch(3))
    accepted(api, batch(3), headers={"Idempotency-Key": "order-44"})
    assert api.stored() == (3, 8)


def test_an_idempotency_key_belongs_to_one_tenant(api_factory: ApiFactory) -> None:
    first, second = api_factory(), api_factory()
    key = {"Idempotency-Key": "shared-key"}
    one = accepted(first, batch(), headers=key)["batch_id"]
    two = accepted(second, batch(), headers=key)["batch_id"]
    assert one != two
    assert first.stored() == second.stored() == (1, 1)


def test_concurrent_posts_with_one_key_make_one_batch(api: Api) -> None:
    threads = 8
    body = batch(5)
    barrier = threading.Barrier(threads)
    responses: list[requests.Response] = []
    lock = threading.Lock()

    def post(base_url: str) -> None:
        session = requests.Session()
        session.get(f"{base_url}/healthz", timeout=30)  # connect before the race
        barrier.wait(timeout=30)
        response = session.post(
            f"{base_url}/v1/batches", json=body, timeout=60, headers=api.headers(**{"Idempotency-Key": "same-for-all"})
        )
        with lock:
            responses.append(response)

    with serving(api.app) as base_url:
        workers = [threading.Thread(target=post, args=(base_url,)) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    assert len(responses) == threads
    assert [r.status_code for r in responses] == [202] * threads, [r.text for r in responses]
    assert len({r.json()["batch_id"] for r in responses}) == 1
    assert sum("Idempotent-Replayed" not in r.headers for r in responses) == 1
    assert api.stored() == (1, 5)


# -- GET /v1/batches --------------------------------------------------------------------------


def test_batches_are_listed_newest_first_with_cursor_pagination(api: Api) -> None:
    submitted = [accepted(api, batch(i + 1))["batch_id"] for i in range(5)]
    newest_first = submitted[::-1]

    everything = api.get("/v1/batches").get_json()
    assert [b["batch_id"] for b in everything["batches"]] == newest_first
    assert everything["next_cursor"] is None
    for body in everything["batches"]:
        assert "calls" not in body
        assert (SEED_STATUS_FIELDS - {"calls"}) | OUR_STATUS_FIELDS <= set(body)
        assert ISO_MS.fullmatch(body["created_at"])
    assert [b["total_calls"] for b in everything["batches"]] == [5, 4, 3, 2, 1]

    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        response = api.get("/v1/batches", **params)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        pages.append([b["batch_id"] for b in page["batches"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert [b["batch_id"] for b in api.get("/v1/batches", limit=5).get_json()["batches"]] == newest_first
    assert api.get("/v1/batches", limit=5).get_json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": cursor_of(17)}, "cursor"),
        ({"cursor": cursor_of(["2026-01-01T00:00:00+00:00"])}, "cursor"),
        ({"cursor": cursor_of(["not a time", "batch_x"])}, "cursor"),
        ({"cursor": cursor_of([1, 2])}, "cursor"),
        ({"cursor": cursor_of(["2026-01-01T00:00:00", "batch_x"])}, "cursor"),  # no time zone
        ({"cursor": cursor_of(["2026-01-01T00:00:00+00:00", "batch\u0000"])}, "cursor"),
    ],
)
def test_bad_list_parameters_are_422_naming_the_parameter(api: Api, params: dict[str, Any], field: str) -> None:
    assert_error(api.get("/v1/batches", **params), 422, "invalid_request", {field})


# -- GET /v1/batches/<id>/calls ---------------------------------------------------------------


def test_call_pages_cover_every_call_once_in_submission_order(api: Api) -> None:
    status = accepted(api, batch(23))
    batch_id = status["batch_id"]
    seen: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        params: dict[str, Any] = {"limit": 5} if cursor is None else {"limit": 5, "cursor": cursor}
        response = api.get(f"/v1/batches/{batch_id}/calls", **params)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        assert set(page) == {"calls", "next_cursor"}
        seen += page["calls"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert [c["phone_number"] for c in seen] == [number(i) for i in range(23)]
    assert len({c["id"] for c in seen}) == 23
    assert [c["id"] for c in seen] == [c["id"] for c in status["calls"]]
    for item in seen:
        assert set(item) >= CALL_FIELDS
        assert item["status"] in CALL_STATUSES and item["priority"] == 5
        for attempt in item["attempts"]:
            assert {"number", "provider_call_id", "outcome", "dialed_at", "answered_at", "ended_at", "duration"} <= set(
                attempt
            )
    everything = api.get(f"/v1/batches/{batch_id}/calls").get_json()
    assert [c["id"] for c in everything["calls"]] == [c["id"] for c in seen]
    assert everything["next_cursor"] is None
    exact = api.get(f"/v1/batches/{batch_id}/calls", limit=23).get_json()
    assert len(exact["calls"]) == 23 and exact["next_cursor"] is None


def test_calls_are_filtered_by_status(api: Api) -> None:
    status = accepted(api, batch(10))
    batch_id = status["batch_id"]
    ids = [c["id"] for c in status["calls"]]
    # Final statuses only, set directly: no worker process moves a final call.
    wanted = {0: "completed", 1: "failed", 2: "cancelled"}
    with api.pg.cursor() as cur:
        for seq in range(10):
            cur.execute(
                "UPDATE calls SET status = %s WHERE batch_id = %s AND seq = %s", (wanted[seq % 3], batch_id, seq)
            )
        cur.execute("UPDATE batches SET status = 'completed', finished_at = now() WHERE id = %s", (batch_id,))
    for name, remainder in (("completed", 0), ("failed", 1), ("cancelled", 2)):
        expected = [ids[i] for i in range(10) if i % 3 == remainder]
        found, cursor = [], None
        while True:
            params: dict[str, Any] = {"status": name, "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = api.get(f"/v1/batches/{batch_id}/calls", **params).get_json()
            assert all(c["status"] == name for c in page["calls"])
            found += [c["id"] for c in page["calls"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert found == expected
    assert api.get(f"/v1/batches/{batch_id}/calls", status="queued").get_json() == {"calls": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "-"}, "limit"),
        ({"limit": "2.5"}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": cursor_of("7")}, "cursor"),
        ({"cursor": cursor_of(True)}, "cursor"),
        ({"cursor": cursor_of(-4)}, "cursor"),
        ({"cursor": cursor_of(2**40)}, "cursor"),
        ({"cursor": cursor_of(["2026-01-01T00:00:00+00:00", "batch_x"])}, "cursor"),
        ({"status": "done"}, "status"),
        ({"status": ""}, "status"),
    ],
)
def test_bad_calls_parameters_are_422_naming_the_parameter(api: Api, params: dict[str, Any], field: str) -> None:
    batch_id = accepted(api, batch(3))["batch_id"]
    assert_error(api.get(f"/v1/batches/{batch_id}/calls", **params), 422, "invalid_request", {field})


def test_the_status_body_holds_the_first_100_calls_or_calls_limit(api: Api) -> None:
    status = accepted(api, batch(120))
    batch_id = status["batch_id"]
    first_100 = [number(i) for i in range(100)]
    assert [c["phone_number"] for c in status["calls"]] == first_100
    path = f"/v1/batches/{batch_id}"
    assert [c["phone_number"] for c in api.get(path).get_json()["calls"]] == first_100
    assert [c["phone_number"] for c in api.get(path, calls_limit=7).get_json()["calls"]] == first_100[:7]
    assert api.get(path, calls_limit=0).get_json()["calls"] == []
    assert len(api.get(path, calls_limit=1000).get_json()["calls"]) == 120
    for bad in (-1, 1001, "many", ""):
        assert_error(api.get(path, calls_limit=bad), 422, "invalid_request", {"calls_limit"})


# -- /healthz ---------------------------------------------------------------------------------


def test_healthz_answers_without_a_key(api: Api) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "broker": "ok"}}


def test_healthz_says_unavailable_without_the_error(caplog: pytest.LogCaptureFixture) -> None:
    """Whoever asks learns which check failed, not the host, port or error text (the log has those)."""
    down = "postgresql://healthz-user@127.0.0.1:1/healthz_db"  # nothing listens on port 1
    app = create_app(load_settings({"DATABASE_URL": down, "REDIS_URL": "redis://127.0.0.1:1/0"}))
    with caplog.at_level(logging.WARNING, logger="batchcalls.api"):
        response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "checks": {"database": "unavailable", "redis": "unavailable", "broker": "unavailable"},
    }
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "check=database" in logged and "check=redis" in logged


# -- /metrics --------------------------------------------------------------------------------


def test_metrics_answers_only_with_the_metrics_token_when_one_is_set(api_factory: ApiFactory) -> None:
    open_api = api_factory()
    assert open_api.client.get("/metrics").status_code == 200
    api = api_factory(BATCHCALLS_METRICS_TOKEN="scrape-secret-1")
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {api.key}"},
        {"Authorization": "Basic scrape-secret-1"},
    ):
        assert_error(api.client.get("/metrics", headers=headers), 401, "unauthorized")
    response = api.client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-1"})
    assert response.status_code == 200
    assert "batchcalls_batches_active" in response.get_data(as_text=True)


# -- Known gap (outside api/) -----------------------------------------------------------------


def test_a_retry_delay_beyond_any_date_is_422(api: Api) -> None:
    assert_refused(api, 422, "invalid_request", body=batch(retry_config={"max_attempts": 2, "delay": 1e12}))
