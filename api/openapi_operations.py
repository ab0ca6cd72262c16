"""What each route of the published contract takes and answers, and the events POSTed to
callback URLs (OpenAPI 3.1 `webhooks`), as apispec operations. No I/O."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema

from api import doc_schemas as docs
from api.openapi_errors import refs as _refs
from api.schemas import BatchRequestSchema
from batchcalls.events import CALL_EVENT_TYPES, EventType
from batchcalls.signing import (
    BATCHCALLS_SIGNATURE_HEADER,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
)

OPENAPI_PATH = "/v1/openapi.json"
DOCS_PATH = "/docs"


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"in": "query", "name": name, "required": False, "description": description, "schema": schema}


BATCH_ID = {
    "in": "path",
    "name": "batch_id",
    "required": True,
    "description": "The batch's id.",
    "schema": {"type": "string"},
    "example": "batch_xyz789",
}
CURSOR = _query(
    "cursor",
    "`next_cursor` of the previous page; any other value is a 422.",
    {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_-]+$"},
)
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def _json(schema: type[Schema], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def paths(seed_examples: dict[str, Any], counted: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every public route and its operations; `seed_examples` are the request examples of POST /v1/batches,
    `counted` the budget headers of a /v1 answer (the error responses carry their own)."""
    status_headers = {
        **counted,
        "Location": {"description": "The batch's status route.", "schema": {"type": "string"}},
        "Idempotent-Replayed": {
            "description": "`true` when an earlier POST with this `Idempotency-Key` made the"
            " batch: this is that batch, not a new one.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }
    call_statuses = [s for s in docs.CallSummarySchema._declared_fields["status"].validate.choices]  # type: ignore[union-attr]
    return {
        "/v1/batches": {
            "post": {
                "operationId": "createBatch",
                "summary": "Create a batch",
                "tags": ["batches"],
                "security": BEARER,
                "description": "Accepts the calls and answers at once; the calls are placed by the workers.",
                "parameters": [
                    {
                        "in": "header",
                        "name": "Idempotency-Key",
                        "required": False,
                        "description": "1 to 255 printable characters. A POST repeated with the same key returns"
                        " the first batch (with `Idempotent-Replayed: true`) instead of making another; the same key"
                        " with another body is a 409.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        "example": "order-2026-11-23-0001",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": BatchRequestSchema, "examples": seed_examples}},
                },
                "responses": {
                    "202": _json(
                        docs.BatchStatusSchema,
                        "Accepted: the new batch's status body (or, replayed, the first one's).",
                        headers=status_headers,
                    ),
                    **_refs(
                        "MalformedJson",
                        "Unauthorized",
                        "IdempotencyConflict",
                        "PayloadTooLarge",
                        "InvalidBatch",
                        "RateLimitedOrQuotaExceeded",
                        "Unavailable",
                    ),
                },
            },
            "get": {
                "operationId": "listBatches",
                "summary": "List batches",
                "tags": ["batches"],
                "security": BEARER,
                "parameters": [
                    _query(
                        "limit", "Batches per page (default 20).", {"type": "integer", "minimum": 1, "maximum": 100}
                    ),
                    CURSOR,
                ],
                "responses": {
                    "200": _json(
                        docs.BatchesPageSchema, "A page of the tenant's batches, newest first.", headers=counted
                    ),
                    **_refs("Unauthorized", "InvalidQuery", "RateLimited"),
                },
            },
        },
        "/v1/batches/{batch_id}": {
            "get": {
                "operationId": "getBatch",
                "summary": "A batch's status",
                "tags": ["batches"],
                "security": BEARER,
                "parameters": [
                    BATCH_ID,
                    _query(
                        "calls_limit",
                        "How many calls `calls` holds (default 100).",
                        {"type": "integer", "minimum": 0, "maximum": 1000},
                    ),
                ],
                "responses": {
                    "200": _json(docs.BatchStatusSchema, "The status body.", headers=counted),
                    **_refs("Unauthorized", "NotFound", "InvalidQuery", "RateLimited"),
                },
            },
        },
        "/v1/batches/{batch_id}/calls": {
            "get": {
                "operationId": "listCalls",
                "summary": "A batch's calls",
                "tags": ["batches"],
                "security": BEARER,
                "parameters": [
                    BATCH_ID,
                    _query(
                        "limit", "Calls per page (default 100).", {"type": "integer", "minimum": 1, "maximum": 1000}
                    ),
                    CURSOR,
                    _query("status", "Only calls with this status.", {"type": "string", "enum": call_statuses}),
                ],
                "responses": {
                    "200": _json(docs.CallsPageSchema, "A page of calls in submission order.", headers=counted),
                    **_refs("Unauthorized", "NotFound", "InvalidQuery", "RateLimited"),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and readiness",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": _json(docs.HealthSchema, "The database, Redis and the broker answer."),
                    "503": _json(docs.HealthSchema, "One of them does not."),
                },
            },
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            },
        },
        DOCS_PATH: {
            "get": {
                "operationId": "reference",
                "summary": "This document as a web page",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML, readable offline.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            },
        },
    }


# --- webhooks ------------------------------------------------------------------------------

SIGNATURE_HEADERS = [
    (
        BATCHCALLS_SIGNATURE_HEADER,
        '`t=<unix seconds>,v1=<hex>`: the hex HMAC-SHA256 of `t + "." + body` keyed with'
        " the whole webhook secret (`whsec_...`), Stripe's scheme: `stripe.WebhookSignature.verify_header` accepts it."
        " While a secret is rotated, one `v1=` per secret.",
        "t=1763905414,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
    ),
    (WEBHOOK_ID_HEADER, "Standard Webhooks: the event's `id`.", "evt_5f1c2a9e0b7d4c3a8e6f1d2c"),
    (WEBHOOK_TIMESTAMP_HEADER, "Standard Webhooks: unix seconds of the delivery.", "1763905414"),
    (
        WEBHOOK_SIGNATURE_HEADER,
        'Standard Webhooks: `v1,<base64>`, the HMAC-SHA256 of `id + "." + timestamp + "." +'
        " body` keyed with the base64-decoded part of the secret (`standardwebhooks`' `Webhook(secret).verify` accepts"
        " it). While a secret is rotated, one `v1,` per secret, space-separated.",
        "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    ),
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


def webhooks() -> dict[str, Any]:
    """One POST per event type, its body a schema name the caller turns into a reference."""
    parameters = [
        {
            "in": "header",
            "name": name,
            "required": True,
            "description": description,
            "schema": {"type": "string"},
            "example": example,
        }
        for name, description, example in SIGNATURE_HEADERS
    ]
    hooks = {}
    for event_type in EventType:
        schema = "CallEvent" if event_type in CALL_EVENT_TYPES else "BatchEvent"
        hooks[event_type.value] = {
            "post": {
                "operationId": f"event_{event_type.value.replace('.', '_')}",
                "summary": EVENT_SUMMARIES[event_type],
                "tags": ["events"],
                "description": "POSTed to the batch's `callback_url`, signed with the tenant's webhook secret. Delivered at"
                " least once (dedupe by `id`), in order per batch where possible, retried with exponential"
                " backoff for at least 24 hours until the receiver answers 2xx.",
                "parameters": parameters,
                "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                "responses": {
                    "2XX": {"description": "Received: the event is not sent again."},
                    "default": {"description": "Not received: the event is sent again later."},
                },
            }
        }
    return hooks


SEED_EXAMPLES = {
    "basic": {
        "summary": "Two calls, two at a time",
        "value": {
            "calls": [
                {"phone_number": "+14155552671", "script": {"text": "Hello, this is a test call."}},
                {"phone_number": "+442071234567", "script": {"text": "Hi, this is another test call."}},
            ],
            "concurrency": 2,
        },
    },
    "advanced": {
        "summary": "Scripts, voices, retries, events",
        "value": {
            "calls": [
                {
                    "phone_number": "+14155552670",
                    "voice_id": "voice_female_1",
                    "priority": 0,
                    "script": {
                        "type": "sales_call",
                        "steps": [
                            {"text": "Hello, I'm calling about our new product."},
                            {"text": "Press 1 to hear more.", "type": "text"},
                            {"type": "input", "dtmf": {"max_digits": 1}, "name": "menu"},
                        ],
                    },
                },
                {
                    "phone_number": "+442071234568",
                    "voice_id": "voice_male_2",
                    "script": {
                        "type": "support_call",
                        "steps": [{"text": "Hi, I'm calling to follow up on your support ticket."}],
                    },
                },
            ],
            "concurrency": 5,
            "priority": 5,
            "retry_config": {
                "max_attempts": 3,
                "delay": 300,
                "backoff_multiplier": 2,
                "retry_on": ["busy", "no_answer"],
            },
            "callback_url": "https://example.com/hooks/batchcalls",
            "metadata": {"campaign": "spring"},
        },
    },
}
