"""The published contract: an OpenAPI 3.1 document built by apispec from the marshmallow schemas,
served at `GET /v1/openapi.json`, and a reference page rendered from it at `GET /docs`.

Both are public (no API key): they describe the API, they hold nothing of any tenant's. The
request schemas are api/schemas.py's, the very ones `POST /v1/batches` loads with; answers and
events are api/doc_schemas.py's. Error examples are made by the real validation from bad bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app, jsonify, render_template
from markupsafe import Markup, escape
from marshmallow import Schema, fields

from api import doc_schemas as docs
from api.reference import reference_page
from api.schemas import (
    BatchRequestSchema,
    CallList,
    CallSchema,
    load_batch_request,
)
from batchcalls.errors import BatchcallsError
from batchcalls.events import CALL_EVENT_TYPES, EventType
from batchcalls.signing import (
    BATCHCALLS_SIGNATURE_HEADER,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
)
from batchcalls.validation import build_batch

OPENAPI_PATH = "/v1/openapi.json"
DOCS_PATH = "/docs"
PUBLIC_PATHS = frozenset({OPENAPI_PATH, DOCS_PATH})
"""Served without an API key and outside the per-key rate limit."""

bp = Blueprint("openapi", __name__, template_folder="templates")

# --- request schema fields apispec cannot see into -------------------------------------------


def _annotated_fields(self: Any, field: fields.Field[Any], ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    # self: apispec's FieldConverterMixin, whose resolve_nested_schema comes from the plugin.
    """`CallList` is an array of `CallSchema`; a field whose metadata names `one_of` schemas is one of them."""
    if isinstance(field, CallList):
        return {"type": "array", "minItems": 1, "items": self.resolve_nested_schema(CallSchema)}
    choices = field.metadata.get("one_of")
    if choices:
        return {"oneOf": [self.resolve_nested_schema(schema) for schema in choices]}
    return {}


# --- errors --------------------------------------------------------------------------------


def _error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _caught(body: Mapping[str, Any], max_concurrency: int, voices: Mapping[str, object]) -> dict[str, Any]:
    """The error body the API answers `body` with, from the real checks."""
    try:
        build_batch(load_batch_request(body), max_concurrency=max_concurrency, voices=voices)
    except BatchcallsError as exc:
        return _error_body(exc.code, exc.message, exc.details)
    raise AssertionError(f"an example of an error was accepted: {body}")


def _validation_examples(max_concurrency: int, voices: Mapping[str, object]) -> dict[str, Any]:
    call = {"phone_number": "+14155552671", "script": {"text": "Hello."}}
    bodies: dict[str, dict[str, Any]] = {
        "invalid_request": {"calls": [call], "colour": "red"},
        "invalid_phone_number": {"calls": [{**call, "phone_number": "+1 555"}, {**call, "phone_number": "4155552671"}]},
        "invalid_script": {"calls": [{**call, "script": {"text": " "}}, {**call, "voice_id": "robot"}]},
        "concurrency_limit": {"calls": [call], "concurrency": max_concurrency + 1},
    }
    return {code: {"summary": code, "value": _caught(body, max_concurrency, voices)} for code, body in bodies.items()}


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                               "schema": {"type": "integer", "minimum": 0}}}


def _error(description: str, examples: dict[str, dict[str, Any]], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response with the error body; `examples` maps each code it may carry to an example body."""
    codes = ", ".join(f"`{code}`" for code in dict.fromkeys(e["value"]["error"]["code"] for e in examples.values()))
    response: dict[str, Any] = {
        "description": f"{description} Code: {codes}.",
        "content": {"application/json": {"schema": docs.ErrorSchema, "examples": examples}},
    }
    if headers:
        response["headers"] = headers
    return response


def _example(code: str, message: str, details: Any = None) -> dict[str, dict[str, Any]]:
    return {code: {"summary": code, "value": _error_body(code, message, details)}}


def _error_responses(max_concurrency: int, voices: Mapping[str, object], rate_limit: str) -> dict[str, dict[str, Any]]:
    return {
        "MalformedJson": _error("The body is not JSON.", _example(
            "invalid_request", "request body is not valid JSON: Expecting value: line 1 column 1 (char 0)")),
        "Unauthorized": _error("Missing or wrong API key.", _example(
            "unauthorized", "missing or invalid API key: send `Authorization: Bearer <api key>`")),
        "NotFound": _error("No such batch, or another tenant's.", _example("not_found", "no batch batch_xyz789")),
        "IdempotencyConflict": _error(
            "The `Idempotency-Key` was used before with a different body.",
            _example("idempotency_conflict", "this Idempotency-Key was used with a different request body",
                     {"batch_id": "batch_xyz789"})),
        "PayloadTooLarge": _error("The body is larger than BATCHCALLS_MAX_BODY_BYTES.", _example(
            "payload_too_large", "request body is larger than BATCHCALLS_MAX_BODY_BYTES allows")),
        "InvalidBatch": _error(
            "The body has the wrong shape (wrong types, unknown fields, bad `retry_config`: `invalid_request`), an"
            " invalid phone number (details name each `calls[i].phone_number`), a missing, empty or too long"
            " script, an unknown step type or `voice_id` (`invalid_script`), or `concurrency` outside 1 and the"
            " account's maximum (`concurrency_limit`).", _validation_examples(max_concurrency, voices)),
        "InvalidQuery": _error("A query parameter is out of range or not one this API gave.", _example(
            "invalid_request", "limit must be between 1 and 1000", {"limit": ["must be 1..1000"]})),
        "RateLimited": _error(
            f"Too many requests for this API key (the operator's BATCHCALLS_RATE_LIMIT, here {rate_limit}).",
            _example("rate_limited", f"{rate_limit}"), RETRY_AFTER),
        "OverCapacity": _error(
            "Accepting the batch would take the calls not yet final, system-wide, above BATCHCALLS_MAX_QUEUED_CALLS.",
            _example("over_capacity", "999990 calls are waiting system-wide; accepting 20 more would exceed 1000000"),
            RETRY_AFTER),
    }


def _refs(*names: str) -> dict[str, Any]:
    statuses = {"MalformedJson": "400", "Unauthorized": "401", "NotFound": "404", "IdempotencyConflict": "409",
                "PayloadTooLarge": "413", "InvalidBatch": "422", "InvalidQuery": "422", "RateLimited": "429",
                "OverCapacity": "503"}
    return {statuses[name]: name for name in names}


# --- paths ---------------------------------------------------------------------------------


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"in": "query", "name": name, "required": False, "description": description, "schema": schema}


BATCH_ID = {"in": "path", "name": "batch_id", "required": True, "description": "The batch's id.",
            "schema": {"type": "string"}, "example": "batch_xyz789"}
CURSOR = _query("cursor", "`next_cursor` of the previous page; any other value is a 422.",
                {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_-]+$"})
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def _json(schema: type[Schema], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def _paths(seed_examples: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status_headers = {
        "Location": {"description": "The batch's status route.", "schema": {"type": "string"}},
        "Idempotent-Replayed": {"description": "`true` when an earlier POST with this `Idempotency-Key` made the"
                                " batch: this is that batch, not a new one.", "schema": {"type": "string", "enum": ["true"]}},
    }
    call_statuses = [s for s in docs.CallSummarySchema._declared_fields["status"].validate.choices]  # type: ignore[union-attr]
    return {
        "/v1/batches": {
            "post": {
                "operationId": "createBatch", "summary": "Create a batch", "tags": ["batches"], "security": BEARER,
                "description": "Accepts the calls and answers at once; the calls are placed by the workers.",
                "parameters": [{"in": "header", "name": "Idempotency-Key", "required": False,
                                "description": "1 to 255 printable characters. A POST repeated with the same key returns"
                                " the first batch (with `Idempotent-Replayed: true`) instead of making another; the same key"
                                " with another body is a 409.", "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                                "example": "order-2026-11-23-0001"}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": BatchRequestSchema, "examples": seed_examples}}},
                "responses": {"202": _json(docs.BatchStatusSchema, "Accepted: the new batch's status body (or, replayed, the"
                                           " first one's).", headers=status_headers),
                              **_refs("MalformedJson", "Unauthorized", "IdempotencyConflict", "PayloadTooLarge",
                                      "InvalidBatch", "RateLimited", "OverCapacity")},
            },
            "get": {
                "operationId": "listBatches", "summary": "List batches", "tags": ["batches"], "security": BEARER,
                "parameters": [_query("limit", "Batches per page (default 20).", {"type": "integer", "minimum": 1, "maximum": 100}),
                               CURSOR],
                "responses": {"200": _json(docs.BatchesPageSchema, "A page of the tenant's batches, newest first."),
                              **_refs("Unauthorized", "InvalidQuery", "RateLimited")},
            },
        },
        "/v1/batches/{batch_id}": {
            "get": {
                "operationId": "getBatch", "summary": "A batch's status", "tags": ["batches"], "security": BEARER,
                "parameters": [BATCH_ID, _query("calls_limit", "How many calls `calls` holds (default 100).",
                                                {"type": "integer", "minimum": 0, "maximum": 1000})],
                "responses": {"200": _json(docs.BatchStatusSchema, "The status body."),
                              **_refs("Unauthorized", "NotFound", "InvalidQuery", "RateLimited")},
            },
        },
        "/v1/batches/{batch_id}/calls": {
            "get": {
                "operationId": "listCalls", "summary": "A batch's calls", "tags": ["batches"], "security": BEARER,
                "parameters": [BATCH_ID,
                               _query("limit", "Calls per page (default 100).", {"type": "integer", "minimum": 1, "maximum": 1000}),
                               CURSOR, _query("status", "Only calls with this status.", {"type": "string", "enum": call_statuses})],
                "responses": {"200": _json(docs.CallsPageSchema, "A page of calls in submission order."),
                              **_refs("Unauthorized", "NotFound", "InvalidQuery", "RateLimited")},
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health", "summary": "Liveness and readiness", "tags": ["operations"], "security": [],
                "responses": {"200": _json(docs.HealthSchema, "The database, Redis and the broker answer."),
                              "503": _json(docs.HealthSchema, "One of them does not.")},
            },
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi", "summary": "This document", "tags": ["operations"], "security": [],
                "responses": {"200": {"description": "The OpenAPI 3.1 document.",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            },
        },
        DOCS_PATH: {
            "get": {
                "operationId": "reference", "summary": "This document as a web page", "tags": ["operations"],
                "security": [],
                "responses": {"200": {"description": "HTML, readable offline.",
                                      "content": {"text/html": {"schema": {"type": "string"}}}}},
            },
        },
    }


# --- webhooks ------------------------------------------------------------------------------

SIGNATURE_HEADERS = [
    (BATCHCALLS_SIGNATURE_HEADER, "`t=<unix seconds>,v1=<hex>`: the hex HMAC-SHA256 of `t + \".\" + body` keyed with"
     " the whole webhook secret (`whsec_...`), Stripe's scheme: `stripe.WebhookSignature.verify_header` accepts it."
     " While a secret is rotated, one `v1=` per secret.", "t=1763905414,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"),
    (WEBHOOK_ID_HEADER, "Standard Webhooks: the event's `id`.", "evt_5f1c2a9e0b7d4c3a8e6f1d2c"),
    (WEBHOOK_TIMESTAMP_HEADER, "Standard Webhooks: unix seconds of the delivery.", "1763905414"),
    (WEBHOOK_SIGNATURE_HEADER, "Standard Webhooks: `v1,<base64>`, the HMAC-SHA256 of `id + \".\" + timestamp + \".\" +"
     " body` keyed with the base64-decoded part of the secret (`standardwebhooks`' `Webhook(secret).verify` accepts"
     " it). While a secret is rotated, one `v1,` per secret, space-separated.", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="),
]

EVENT_SUMMARIES = {
    EventType.BATCH_STARTED: "The batch's first call was dialed.",
    EventType.CALL_COMPLETED: "A call ended with outcome `completed` (answered by a person).",
    EventType.CALL_FAILED: "A call ended with any other final outcome but `cancelled`.",
    EventType.BATCH_COMPLETED: "Every call is final and at least one succeeded; sent once per batch.",
    EventType.BATCH_FAILED: "Every call is final and none succeeded, or a fatal provider error aborted the batch;"
                            " sent once per batch.",
    EventType.BATCH_CANCELLED: "The batch was cancelled; its terminal event instead of completed or failed.",
}


def _webhooks() -> dict[str, Any]:
    parameters = [{"in": "header", "name": name, "required": True, "description": description,
                   "schema": {"type": "string"}, "example": example} for name, description, example in SIGNATURE_HEADERS]
    hooks = {}
    for event_type in EventType:
        schema = "CallEvent" if event_type in CALL_EVENT_TYPES else "BatchEvent"
        hooks[event_type.value] = {"post": {
            "operationId": f"event_{event_type.value.replace('.', '_')}",
            "summary": EVENT_SUMMARIES[event_type], "tags": ["events"],
            "description": "POSTed to the batch's `callback_url`, signed with the tenant's webhook secret. Delivered at"
                           " least once (dedupe by `id`), in order per batch where possible, retried with exponential"
                           " backoff for at least 24 hours until the receiver answers 2xx.",
            "parameters": parameters,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {"2XX": {"description": "Received: the event is not sent again."},
                          "default": {"description": "Not received: the event is sent again later."}},
        }}
    return hooks


# --- the document ----------------------------------------------------------------------------

SEED_EXAMPLES = {
    "basic": {"summary": "Two calls, two at a time", "value": {
        "calls": [{"phone_number": "+14155552671", "script": {"text": "Hello, this is a test call."}},
                  {"phone_number": "+442071234567", "script": {"text": "Hi, this is another test call."}}],
        "concurrency": 2}},
    "advanced": {"summary": "Scripts, voices, retries, events", "value": {
        "calls": [{"phone_number": "+14155552670", "voice_id": "voice_female_1", "priority": 0,
                   "script": {"type": "sales_call", "steps": [
                       {"text": "Hello, I'm calling about our new product."},
                       {"text": "Press 1 to hear more.", "type": "text"},
                       {"type": "input", "dtmf": {"max_digits": 1}, "name": "menu"}]}},
                  {"phone_number": "+442071234568", "voice_id": "voice_male_2",
                   "script": {"type": "support_call", "steps": [
                       {"text": "Hi, I'm calling to follow up on your support ticket."}]}}],
        "concurrency": 5, "priority": 5,
        "retry_config": {"max_attempts": 3, "delay": 300, "backoff_multiplier": 2, "retry_on": ["busy", "no_answer"]},
        "callback_url": "https://example.com/hooks/batchcalls", "metadata": {"campaign": "spring"}}},
}

SCHEMAS: dict[str, type[Schema] | Schema] = {
    "BatchRequest": BatchRequestSchema,
    "Error": docs.ErrorSchema, "BatchStatus": docs.BatchStatusSchema, "Batch": docs.BatchSchema,
    "Call": docs.CallSchema, "CallsPage": docs.CallsPageSchema, "BatchesPage": docs.BatchesPageSchema,
    "Health": docs.HealthSchema, "BatchEvent": docs.BatchEventSchema, "CallEvent": docs.CallEventSchema,
}


# A call as submitted and a call as shown are two schemas both named CallSchema.
_NAMES: dict[type[Schema], str] = {CallSchema: "NewCall"}


# What a marshmallow schema cannot say about its fields together (batchcalls.scripts checks it).
CROSS_FIELD_RULES = {"Script": {"oneOf": [{"required": ["text"]}, {"required": ["steps"]}]}}


def _schema_name(schema: type[Schema] | Schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return _NAMES.get(cls) or cls.__name__.removesuffix("Schema")


def build_document(*, max_concurrency: int, voices: Mapping[str, object], rate_limit: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API as a JSON-ready dict (no I/O)."""
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(
        title="Batchcalls", version="1", openapi_version="3.1.0", plugins=[plugin],
        info={"description": "Place many AI voice calls from one request: per-call scripts and voices, a"
              " concurrency limit per batch, retries, progress, results and signed webhook events.\n\n"
              "Every route under /v1 but this document needs `Authorization: Bearer <api key>`. Errors are"
              " `{\"error\": {\"code\", \"message\", \"details\"}}`; bad input is never a 500. Timestamps are ISO 8601"
              " UTC with milliseconds. Voices: " + ", ".join(f"`{v}`" for v in sorted(voices)) + "."},
        tags=[{"name": "batches"}, {"name": "operations"}, {"name": "events"}],
    )
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_annotated_fields)  # type: ignore[no-untyped-call]
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer", "description": "An API key from `batchcalls keys create --tenant NAME`."})
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for name, response in _error_responses(max_concurrency, voices, rate_limit).items():
        spec.components.response(name, response)
    for path, operations in _paths(SEED_EXAMPLES).items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    for name, rules in CROSS_FIELD_RULES.items():
        document["components"]["schemas"][name].update(rules)
    webhooks = _webhooks()
    for hook in webhooks.values():
        body = hook["post"]["requestBody"]["content"]["application/json"]
        body["schema"] = {"$ref": f"#/components/schemas/{body['schema']}"}
    document["webhooks"] = webhooks
    return document


def _document() -> dict[str, Any]:
    build: Callable[[], dict[str, Any]] = current_app.extensions["batchcalls.openapi"]
    return build()


@bp.app_template_filter("code_spans")
def code_spans(text: str) -> Markup:
    """`name` in a description as <code>name</code>, everything else escaped."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts)))


@bp.get(OPENAPI_PATH)
def openapi_document() -> Response:
    return jsonify(_document())


@bp.get(DOCS_PATH)
def reference() -> str:
    return render_template("reference.html", page=reference_page(_document()))
