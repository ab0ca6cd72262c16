"""What each route of the published contract takes and answers, as apispec operations (the events
POSTed to callback URLs are in `api.openapi_webhooks`). No I/O."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema

from api import doc_schemas as docs
from api.openapi_control import control_paths
from api.openapi_errors import refs as _refs
from api.openapi_results import results_paths
from api.openapi_suppressions import suppression_paths
from api.schemas import BatchRequestSchema

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
                    "content": {
                        "application/json": {"schema": BatchRequestSchema, "examples": seed_examples},
                        "text/csv": {
                            "schema": {
                                "type": "string",
                                "description": "A header line naming the columns (phone_number required; text, voice_id,"
                                " priority; metadata.<key>; any other column a variable), then a call a line. The batch's"
                                " options are query parameters (text is the default script text of rows without one;"
                                " retry_config, metadata and calling_window are JSON text; dedupe is true or false). Problems are named by"
                                " line and column (`line 5, column phone_number`).",
                            },
                            "example": "phone_number,first_name\n+14155552671,Ada\n",
                        },
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary", "description": "The CSV."},
                                    "options": {"type": "string", "description": "The batch's options, a JSON object."},
                                },
                            }
                        },
                    },
                },
                "responses": {
                    "202": _json(
                        docs.BatchAcceptedSchema,
                        "Accepted: the new batch's status body (or, replayed, the first one's), and the calls it"
                        " skipped (`invalid_numbers: skip`).",
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
        **control_paths(BATCH_ID, BEARER, counted),
        **suppression_paths(BEARER, counted),
        **results_paths(BATCH_ID, BEARER, counted),
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
