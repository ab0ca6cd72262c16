"""The published OpenAPI document and its reference page, without I/O: what the API really
answers and sends (built by `batchcalls.domain.payloads` and `batchcalls.domain.events`) must validate against
the document's schemas, so the document cannot drift from the code."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from flask import Flask
from openapi_spec_validator import validate as validate_spec
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from api import openapi
from api.call_doc_schemas import AgentStepSchema, CallSchema, InputStepSchema, ScriptSchema, TextStepSchema
from api.schemas import CALL_FIELDS, SCRIPT_FIELDS, load_batch_request
from batchcalls.domain.errors import BatchcallsError
from batchcalls.domain.events import EventType, make_event
from batchcalls.domain.payloads import batch_view, call_summary, call_view
from batchcalls.domain.policy import Policy
from batchcalls.domain.scripts import STEP_KINDS
from batchcalls.domain.signing import signature_headers
from batchcalls.domain.validation import build_batch
from batchcalls.domain.voices import voice_catalog

DOC_URI = "urn:batchcalls:openapi"
DEFAULTS = Policy(max_queued_calls=5000, max_calls_per_batch=1000)
T0 = datetime(2026, 11, 23, 13, 43, 34, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    built = openapi.build_document(
        max_concurrency=100,
        voices=voice_catalog(),
        rate_limit="1200 per minute",
        auth_failure_limit="20 per minute",
        tenant_defaults=DEFAULTS,
    )
    as_sent: dict[str, Any] = json.loads(json.dumps(built))  # as a client gets it
    return as_sent


def validate(document: dict[str, Any], instance: Any, schema: dict[str, Any]) -> None:
    """Validate `instance` against `schema`, whose $refs point into `document` (JSON Schema 2020-12,
    the dialect of OpenAPI 3.1)."""
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(document))
    resolved = json.loads(json.dumps(schema).replace('"#/', f'"{DOC_URI}#/'))
    jsonschema.Draft202012Validator(
        resolved, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(instance)


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


# --- real bodies ---------------------------------------------------------------------------

BATCH_ROW = {
    "id": "batch_1f2e3d",
    "status": "running",
    "total_calls": 3,
    "completed_calls": 1,
    "failed_calls": 1,
    "cancelled_calls": 0,
    "concurrency": 5,
    "priority": 5,
    "retry_config": {"max_attempts": 3, "delay": 300, "backoff_multiplier": 2.0, "retry_on": ["busy", "no_answer"]},
    "callback_url": "https://crm.example.com/hooks",
    "metadata": {"campaign": "spring", "n": [1, {"a": None}]},
    "created_at": T0,
    "started_at": T0 + timedelta(seconds=1),
    "finished_at": None,
}
CALL_ROW = {
    "id": "call_a1",
    "phone_number": "+14155552671",
    "status": "completed",
    "outcome": "completed",
    "priority": 0,
    "voice_id": "voice_female_1",
    "script": {"type": "sales_call", "steps": [{"type": "text", "text": "Hi."}]},
    "responses": [
        {
            "id": "uuid-1:1:2026-11-23T13:43:40.000Z",
            "step": 1,
            "name": "menu",
            "attempt": 2,
            "digits": "1",
            "speech": [{"text": "yes", "confidence": 0.94}],
            "timed_out": False,
            "at": "2026-11-23T13:43:40.000Z",
        }
    ],
    "last_error": None,
    "next_attempt_at": None,
}
ATTEMPTS: list[dict[str, Any]] = [
    {
        "number": 2,
        "provider_call_id": "uuid-2",
        "outcome": "completed",
        "dialed_at": T0 + timedelta(seconds=70),
        "answered_at": T0 + timedelta(seconds=72),
        "ended_at": T0 + timedelta(seconds=80),
    },
    {
        "number": 1,
        "provider_call_id": None,
        "outcome": "busy",
        "dialed_at": T0,
        "answered_at": None,
        "ended_at": T0 + timedelta(seconds=3),
    },
]
WAITING_CALL_ROW = {
    **CALL_ROW,
    "id": "call_b2",
    "status": "scheduled",
    "outcome": None,
    "voice_id": None,
    "script": {"type": None, "steps": []},
    "responses": [],
    "last_error": "busy",
    "next_attempt_at": T0 + timedelta(minutes=5),
}
COUNTS = {"dialing": 1, "queued": 0, "scheduled": 0, "completed": 1, "failed": 1}


def status_body(calls_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What `GET /v1/batches/<id>` answers, built as api/batches.py builds it."""
    return {**batch_view(BATCH_ROW, COUNTS), "calls": [call_summary(c) for c in calls_rows]}


def test_a_real_status_body_validates(document: dict[str, Any]) -> None:
    validate(document, status_body([CALL_ROW, WAITING_CALL_ROW]), component("BatchStatus"))
    fresh = {**BATCH_ROW, "status": "queued", "started_at": None, "callback_url": None, "metadata": None}
    validate(document, {"batches": [batch_view(fresh, {})], "next_cursor": None}, component("BatchesPage"))


def test_a_real_calls_page_validates(document: dict[str, Any]) -> None:
    page = {"calls": [call_view(CALL_ROW, ATTEMPTS), call_view(WAITING_CALL_ROW, ATTEMPTS[1:])], "next_cursor": "MTA"}
    validate(document, page, component("CallsPage"))


@pytest.mark.parametrize("event_type", list(EventType))
def test_a_real_event_of_each_type_validates(document: dict[str, Any], event_type: EventType) -> None:
    data = (
        call_view(CALL_ROW, ATTEMPTS) if event_type.value.startswith("batch.call_") else batch_view(BATCH_ROW, COUNTS)
    )
    event = make_event(event_type, "batch_1f2e3d", data, T0)
    hook = document["webhooks"][event_type.value]["post"]
    validate(document, event, hook["requestBody"]["content"]["application/json"]["schema"])
    # Every header the signer sends is documented, and every documented header is sent.
    sent = signature_headers(("whsec_" + "A" * 32,), event["id"], json.dumps(event).encode(), 1763905414)
    assert {p["name"].lower() for p in hook["parameters"]} == {name.lower() for name in sent}


def test_a_field_the_views_add_without_documenting_fails(document: dict[str, Any]) -> None:
    body = {**status_body([CALL_ROW]), "secret_new_field": 1}
    with pytest.raises(jsonschema.ValidationError, match="secret_new_field"):
        validate(document, body, component("BatchStatus"))


def test_an_event_of_the_wrong_kind_fails(document: dict[str, Any]) -> None:
    event = make_event(EventType.CALL_FAILED, "batch_1f2e3d", batch_view(BATCH_ROW, COUNTS), T0)
    with pytest.raises(jsonschema.ValidationError):
        validate(document, event, component("CallEvent"))


# --- the request side ----------------------------------------------------------------------


def test_documentation_schemas_name_the_fields_the_checks_accept() -> None:
    assert set(CallSchema().fields) == CALL_FIELDS
    assert set(ScriptSchema().fields) == SCRIPT_FIELDS
    steps = {"text": TextStepSchema, "input": InputStepSchema, "agent": AgentStepSchema}
    assert steps.keys() == STEP_KINDS.keys()
    for name, schema in steps.items():
        assert set(schema().fields) == STEP_KINDS[name].fields | {"type"}, name


def test_request_examples_are_accepted_by_the_real_checks(document: dict[str, Any]) -> None:
    content = document["paths"]["/v1/batches"]["post"]["requestBody"]["content"]["application/json"]
    assert content["examples"]
    for example in content["examples"].values():
        validate(document, example["value"], content["schema"])
        build_batch(load_batch_request(example["value"]), max_concurrency=100, voices=voice_catalog())


def test_request_schema_refuses_unknown_fields_like_the_api(document: dict[str, Any]) -> None:
    body = {"calls": [{"phone_number": "+14155552671", "script": {"text": "Hi."}, "colour": "red"}]}
    with pytest.raises(jsonschema.ValidationError):
        validate(document, body, component("BatchRequest"))


SCRIPTS = [
    {"text": "Hello."},
    {"type": "survey", "steps": [{"text": "Hi."}, {"type": "input", "dtmf": True}]},
    {"text": "Hello.", "steps": [{"text": "Hi."}]},
    {"type": "survey"},
    {"text": " "},
    {"text": ""},
    {"text": "x" * 1500},
    {"text": "x" * 1501},
    {"steps": []},
    {"steps": [{"type": "agent", "url": "wss://a.example"}]},
    {"steps": [{"type": "dance"}]},
    {"steps": [{"text": "Hi.", "colour": "red"}]},
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: json.dumps(s)[:40])
def test_the_document_and_the_real_checks_agree_on_scripts(document: dict[str, Any], script: dict[str, Any]) -> None:
    body = {"calls": [{"phone_number": "+14155552671", "script": script}]}
    try:
        validate(document, body, component("BatchRequest"))
        documented = True
    except jsonschema.ValidationError:
        documented = False
    try:
        build_batch(load_batch_request(body), max_concurrency=100, voices=voice_catalog())
        accepted = True
    except BatchcallsError:
        accepted = False
    assert documented == accepted


# --- routes, errors, security ---------------------------------------------------------------

DESIGN_CODES = {
    ("/v1/suppressions", "post"): {"422": {"invalid_request", "invalid_phone_number"}, "429": {"rate_limited"}},
    ("/v1/suppressions/{phone_number}", "delete"): {"404": {"not_found"}, "422": {"invalid_phone_number"}},
    ("/v1/batches", "post"): {
        "400": {"invalid_request"},
        "401": {"unauthorized"},
        "409": {"idempotency_conflict"},
        "413": {"payload_too_large"},
        "429": {"rate_limited", "quota_exceeded"},
        "503": {"over_capacity", "unavailable"},
        "422": {
            "invalid_request",
            "invalid_phone_number",
            "duplicate_phone_number",
            "destination_not_allowed",
            "invalid_script",
            "concurrency_limit",
        },
    },
    ("/v1/batches", "get"): {"401": {"unauthorized"}, "422": {"invalid_request"}, "429": {"rate_limited"}},
    ("/v1/batches/{batch_id}", "get"): {
        "401": {"unauthorized"},
        "404": {"not_found"},
        "422": {"invalid_request"},
        "429": {"rate_limited"},
    },
    ("/v1/batches/{batch_id}/calls", "get"): {
        "401": {"unauthorized"},
        "404": {"not_found"},
        "422": {"invalid_request"},
        "429": {"rate_limited"},
    },
    **{
        (f"/v1/batches/{{batch_id}}/{command}", "post"): {
            "400": {"invalid_request"},
            "401": {"unauthorized"},
            "404": {"not_found"},
            "409": {"invalid_state"},
            "422": {"invalid_request"},
            "429": {"rate_limited"},
            "503": {"unavailable"},
        }
        for command in ("pause", "resume", "cancel")
    },
}


def _response(document: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    response = document["paths"][path][method]["responses"][status]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    return response  # type: ignore[no-any-return]


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate_spec(document)  # raises on the first problem


def test_every_route_and_error_code_of_the_design_is_documented(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/v1/batches",
        "/v1/batches/{batch_id}",
        "/v1/batches/{batch_id}/calls",
        "/v1/batches/{batch_id}/results",
        "/v1/batches/{batch_id}/pause",
        "/v1/batches/{batch_id}/resume",
        "/v1/batches/{batch_id}/cancel",
        "/v1/suppressions",
        "/v1/suppressions/{phone_number}",
        "/healthz",
        "/v1/openapi.json",
        "/docs",
    }
    assert not any(path.startswith("/webhooks/") for path in document["paths"])  # internal
    for (path, method), statuses in DESIGN_CODES.items():
        for status, codes in statuses.items():
            response = _response(document, path, method, status)
            examples = response["content"]["application/json"]["examples"].values()
            assert {e["value"]["error"]["code"] for e in examples} == codes, (path, method, status)
            for example in examples:
                validate(document, example["value"], component("Error"))
        for status in ("429",):
            assert "Retry-After" in _response(document, path, method, status)["headers"]
    assert "Retry-After" in _response(document, "/v1/batches", "post", "503")["headers"]


def test_every_authenticated_answer_documents_the_budget_headers(document: dict[str, Any]) -> None:
    """Every /v1 answer but the contract's carries `RateLimit-Policy` and `RateLimit` when the budget
    could be counted (api.ratelimit.Standing.apply): optional, the 401's naming `failed-auth`."""
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/") or path in openapi.PUBLIC_PATHS:
            continue
        for method, op in operations.items():
            for status in op["responses"]:
                headers = _response(document, path, method, status)["headers"]
                for name in ("RateLimit-Policy", "RateLimit"):
                    assert headers[name]["required"] is False, (path, method, status, name)
                policy = headers["RateLimit-Policy"]["example"]
                assert policy == ('"failed-auth";q=20;w=60' if status == "401" else '"tenant";q=1200;w=60'), status
    described = _response(document, "/v1/batches", "get", "429")["description"]
    assert "BATCHCALLS_AUTH_FAILURE_LIMIT" in described and "API key (" not in described


def _examples(document: dict[str, Any], status: str) -> dict[str, Any]:
    content = _response(document, "/v1/batches", "post", status)["content"]["application/json"]
    return {name: example["value"]["error"] for name, example in content["examples"].items()}


def test_the_new_422_examples_come_from_the_real_checks(document: dict[str, Any]) -> None:
    examples = _examples(document, "422")
    blocked = examples["destination_not_allowed"]
    assert set(blocked["details"]) == {"calls[0].phone_number", "calls[1].phone_number", "calls[2].phone_number"}
    assert "premium_rate" in blocked["details"]["calls[0].phone_number"][0]
    assert "+881" in blocked["details"]["calls[1].phone_number"][0]
    assert "may call only GB, US" in blocked["details"]["calls[2].phone_number"][0]
    too_many = examples["too_many_calls"]
    assert too_many["code"] == "invalid_request"
    assert list(too_many["details"]) == ["calls"]
    assert "at most 1000 per batch (max_calls_per_batch)" in too_many["message"]


def test_quota_and_unavailable_examples_carry_the_quota_of_the_settings(document: dict[str, Any]) -> None:
    quota = _examples(document, "429")["quota_exceeded"]
    assert quota["details"]["limit"] == DEFAULTS.max_queued_calls
    validate(document, {"error": quota}, component("Error"))
    assert "Redis" in _examples(document, "503")["unavailable"]["message"]


def test_v1_routes_need_the_bearer_key_and_the_contract_does_not(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for path, operations in document["paths"].items():
        for op in operations.values():
            public = path in openapi.PUBLIC_PATHS or not path.startswith("/v1/")
            assert op["security"] == ([] if public else [{"bearerAuth": []}]), path


def test_idempotency_key_and_query_parameters_are_documented(document: dict[str, Any]) -> None:
    def names(path: str, method: str) -> set[str]:
        return {p["name"] for p in document["paths"][path][method].get("parameters", [])}

    assert names("/v1/batches", "post") == {"Idempotency-Key"}
    assert names("/v1/batches", "get") == {"limit", "cursor"}
    assert names("/v1/batches/{batch_id}", "get") == {"batch_id", "calls_limit"}
    assert names("/v1/batches/{batch_id}/calls", "get") == {"batch_id", "limit", "cursor", "status"}


def test_webhooks_are_the_event_types(document: dict[str, Any]) -> None:
    assert set(document["webhooks"]) == {t.value for t in EventType}


# --- the reference page --------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(document: dict[str, Any]) -> str:
    app = Flask("reference-test")
    app.extensions["batchcalls.openapi"] = lambda: document
    app.register_blueprint(openapi.bp)
    response = app.test_client().get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def test_reference_page_shows_every_route_error_code_and_event(page: str, document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method in operations:
            assert re.search(rf"{method.upper()}</span> <code>{re.escape(path)}</code>", page), (method, path)
    for codes in DESIGN_CODES.values():
        for code in set().union(*codes.values()):
            assert f"<code>{code}</code>" in page, code
    for event_type in EventType:
        assert event_type.value in page
    for header in ("Batchcalls-Signature", "webhook-signature", "Idempotency-Key", "Retry-After", "calls_limit"):
        assert header in page


def test_reference_page_fetches_nothing_from_elsewhere(page: str) -> None:
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    for target in re.findall(r"""\b(?:src|href|action)\s*=\s*["']?([^"'\s>]*)""", page):
        assert target.startswith(("#", "/")) and not target.startswith("//"), target
    assert "@import" not in page and "url(" not in page


def test_descriptions_show_code_and_escape_everything_else() -> None:
    assert openapi.code_spans("send `Authorization: Bearer <key>` <b>now</b>") == (
        "send <code>Authorization: Bearer &lt;key&gt;</code> &lt;b&gt;now&lt;/b&gt;"
    )
