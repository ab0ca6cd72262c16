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
from api.call_doc_schemas import CallSchema
from api.openapi_errors import counted_headers, error_responses
from api.openapi_operations import DOCS_PATH, OPENAPI_PATH, SEED_EXAMPLES, paths
from api.openapi_webhooks import webhooks
from api.reference import reference_page
from api.schemas import BatchRequestSchema, CallList
from batchcalls.domain.policy import Policy

PUBLIC_PATHS = frozenset({OPENAPI_PATH, DOCS_PATH})
"""Served without an API key and outside the request budgets."""

bp = Blueprint("openapi", __name__, template_folder="templates")

# --- request schema fields apispec cannot see into -------------------------------------------


def _annotated_fields(self: Any, field: fields.Field[Any], ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """`CallList` is an array of `CallSchema`; a field whose metadata names `one_of` schemas is one of them.
    `self` is apispec's field converter, whose `resolve_nested_schema` the plugin provides."""
    if isinstance(field, CallList):
        return {"type": "array", "minItems": 1, "items": self.resolve_nested_schema(CallSchema)}
    choices = field.metadata.get("one_of")
    if choices:
        return {"oneOf": [self.resolve_nested_schema(schema) for schema in choices]}
    return {}


# --- the document ----------------------------------------------------------------------------

SCHEMAS: dict[str, type[Schema] | Schema] = {
    "BatchRequest": BatchRequestSchema,
    "Error": docs.ErrorSchema,
    "BatchStatus": docs.BatchStatusSchema,
    "BatchAccepted": docs.BatchAcceptedSchema,
    "Batch": docs.BatchSchema,
    "Call": docs.CallSchema,
    "CallsPage": docs.CallsPageSchema,
    "BatchesPage": docs.BatchesPageSchema,
    "Health": docs.HealthSchema,
    "BatchEvent": docs.BatchEventSchema,
    "CallEvent": docs.CallEventSchema,
}


# A call as submitted and a call as shown are two schemas both named CallSchema.
_NAMES: dict[type[Schema], str] = {CallSchema: "NewCall"}


# What a marshmallow schema cannot say about its fields together (batchcalls.domain.scripts checks it).
CROSS_FIELD_RULES = {"Script": {"oneOf": [{"required": ["text"]}, {"required": ["steps"]}]}}


def _schema_name(schema: type[Schema] | Schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return _NAMES.get(cls) or cls.__name__.removesuffix("Schema")


def build_document(
    *,
    max_concurrency: int,
    voices: Mapping[str, object],
    rate_limit: str,
    auth_failure_limit: str,
    tenant_defaults: Policy,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API as a JSON-ready dict (no I/O). `tenant_defaults` is the
    policy of a tenant with no values of its own."""
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(
        title="Batchcalls",
        version="1",
        openapi_version="3.1.0",
        plugins=[plugin],
        info={
            "description": "Place many AI voice calls from one request: per-call scripts and voices, a"
            " concurrency limit per batch, retries, progress, results and signed webhook events.\n\n"
            "Every route under /v1 but this document needs `Authorization: Bearer <api key>`. Errors are"
            ' `{"error": {"code", "message", "details"}}`; bad input is never a 500. Timestamps are ISO 8601'
            " UTC with milliseconds. Voices: " + ", ".join(f"`{v}`" for v in sorted(voices)) + "."
        },
        tags=[{"name": "batches"}, {"name": "suppressions"}, {"name": "operations"}, {"name": "events"}],
    )
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_annotated_fields)  # type: ignore[no-untyped-call]
    spec.components.security_scheme(
        "bearerAuth",
        {"type": "http", "scheme": "bearer", "description": "An API key from `batchcalls keys create --tenant NAME`."},
    )
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    errors = error_responses(
        max_concurrency, voices, rate_limit=rate_limit, auth_failure_limit=auth_failure_limit, defaults=tenant_defaults
    )
    for name, response in errors.items():
        spec.components.response(name, response)
    for path, operations in paths(SEED_EXAMPLES, counted_headers(rate_limit)).items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    for name, rules in CROSS_FIELD_RULES.items():
        document["components"]["schemas"][name].update(rules)
    hooks = webhooks()
    for hook in hooks.values():
        body = hook["post"]["requestBody"]["content"]["application/json"]
        body["schema"] = {"$ref": f"#/components/schemas/{body['schema']}"}
    document["webhooks"] = hooks
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
