"""The suppression routes (`/v1/suppressions`) as apispec operations and their schemas. No I/O.
The 422 examples are made by the real check, so their messages are the API's own."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from api import doc_schemas as docs
from api.openapi_errors import refs
from api.suppressions import MAX_NUMBERS, MAX_REASON, NOT_A_NUMBER
from batchcalls.domain.errors import InvalidPhoneNumber
from batchcalls.domain.validation import check_phone_numbers


class SuppressionSchema(Schema):
    phone_number = fields.String(required=True, metadata={"description": "E.164.", "example": "+14155552671"})
    reason = fields.String(required=True, allow_none=True, metadata={"description": "As given when added."})
    created_at = fields.DateTime(
        required=True, metadata={"description": "When it was added. ISO 8601 UTC with milliseconds."}
    )


class SuppressionsPageSchema(Schema):
    suppressions = fields.List(fields.Nested(SuppressionSchema), required=True, metadata={"description": "By number."})
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Pass as `cursor` for the next page; null on the last."},
    )


class SuppressionsAddedSchema(Schema):
    added = fields.Integer(required=True, metadata={"description": "Numbers not suppressed before."})
    already_suppressed = fields.Integer(required=True, metadata={"description": "Numbers suppressed already (kept)."})
    phone_numbers = fields.List(
        fields.String(), required=True, metadata={"description": "The numbers given, in E.164, in their order."}
    )


REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "required": ["phone_numbers"],
                "properties": {
                    "phone_numbers": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_NUMBERS,
                        "items": {"type": "string"},
                        "description": "Numbers in international form; normalised to E.164 as a call's are.",
                    },
                    "reason": {"type": ["string", "null"], "maxLength": MAX_REASON},
                },
            },
            "example": {"phone_numbers": ["+14155552671", "+44 20 7946 0000"], "reason": "asked not to be called"},
        }
    },
}

PHONE_NUMBER = {
    "in": "path",
    "name": "phone_number",
    "required": True,
    "description": "The number, in international form (`+` URL-encoded as `%2B` or left as is).",
    "schema": {"type": "string"},
    "example": "+14155552671",
}


def _example(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {code: {"summary": code, "value": {"error": {"code": code, "message": message, "details": details}}}}


def _invalid_examples() -> dict[str, Any]:
    shape = _example("invalid_request", "unknown fields: numbers", {"numbers": ["unknown field"]})
    try:
        check_phone_numbers(["+14155552671", "+1 555", "4155552671"], "phone_numbers")
    except InvalidPhoneNumber as exc:
        return {**shape, **_example(exc.code, exc.message, exc.details)}
    raise AssertionError("the example's numbers were accepted")


def _error(description: str, examples: dict[str, Any], counted: dict[str, Any]) -> dict[str, Any]:
    codes = ", ".join(f"`{code}`" for code in examples)
    return {
        "description": f"{description} Code: {codes}.",
        "content": {"application/json": {"schema": docs.ErrorSchema, "examples": examples}},
        "headers": counted,
    }


def suppression_paths(bearer: list[dict[str, list[str]]], counted: dict[str, Any]) -> dict[str, Any]:
    """`POST` and `GET /v1/suppressions`, `DELETE /v1/suppressions/{phone_number}`."""
    invalid = _error(
        "The body has the wrong shape (`invalid_request`) or an invalid number (`invalid_phone_number`, details"
        " name each `phone_numbers[i]`); nothing was stored.",
        _invalid_examples(),
        counted,
    )
    bad_number = _example(
        "invalid_phone_number", f"invalid phone number: phone_number: {NOT_A_NUMBER}", {"phone_number": [NOT_A_NUMBER]}
    )
    query = "in", "query"
    return {
        "/v1/suppressions": {
            "post": {
                "operationId": "addSuppressions",
                "summary": "Suppress numbers",
                "description": "The tenant's batches never dial these numbers: a call to one is stored `failed` with"
                " outcome `suppressed` and no attempt, at submit, and also when the number is added while its batch"
                " runs (each dial looks the number up first). A number suppressed already keeps its entry.",
                "tags": ["suppressions"],
                "security": bearer,
                "requestBody": REQUEST_BODY,
                "responses": {
                    "201": {
                        "description": "Stored.",
                        "content": {"application/json": {"schema": SuppressionsAddedSchema}},
                        "headers": counted,
                    },
                    "422": invalid,
                    **refs("MalformedJson", "Unauthorized", "PayloadTooLarge", "RateLimited"),
                },
            },
            "get": {
                "operationId": "listSuppressions",
                "summary": "The tenant's suppressed numbers",
                "tags": ["suppressions"],
                "security": bearer,
                "parameters": [
                    {
                        query[0]: query[1],
                        "name": "limit",
                        "required": False,
                        "description": "Per page (default 100).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {
                        query[0]: query[1],
                        "name": "cursor",
                        "required": False,
                        "description": "`next_cursor` of the previous page; any other value is a 422.",
                        "schema": {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_-]+$"},
                    },
                    {
                        query[0]: query[1],
                        "name": "phone_number",
                        "required": False,
                        "description": "Only this number's entry (an empty list when it is not suppressed).",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page of suppressions in number order.",
                        "content": {"application/json": {"schema": SuppressionsPageSchema}},
                        "headers": counted,
                    },
                    **refs("Unauthorized", "InvalidQuery", "RateLimited"),
                },
            },
        },
        "/v1/suppressions/{phone_number}": {
            "delete": {
                "operationId": "removeSuppression",
                "summary": "Dial a number again",
                "description": "Removes the number from the tenant's list; later dials of it go ahead.",
                "tags": ["suppressions"],
                "security": bearer,
                "parameters": [PHONE_NUMBER],
                "responses": {
                    "204": {"description": "Removed.", "headers": counted},
                    "404": _error(
                        "The number is not suppressed for this tenant.",
                        _example("not_found", "+14155552671 is not suppressed"),
                        counted,
                    ),
                    "422": _error("The number is not a valid one in international form.", bad_number, counted),
                    **refs("Unauthorized", "RateLimited"),
                },
            },
        },
    }
