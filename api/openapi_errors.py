"""The error answers of the published contract: one OpenAPI response per kind, each with an
example body for every code it may carry. The 422 examples are made by the real checks from bad
bodies, so their messages are the API's own. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api import doc_schemas as docs
from api.schemas import load_batch_request
from batchcalls.errors import BatchcallsError
from batchcalls.validation import build_batch


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


def error_responses(max_concurrency: int, voices: Mapping[str, object], rate_limit: str) -> dict[str, dict[str, Any]]:
    """The reusable error responses (components/responses), by name."""
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


def refs(*names: str) -> dict[str, Any]:
    """An operation's `responses` entries for the named error responses, keyed by their status."""
    statuses = {"MalformedJson": "400", "Unauthorized": "401", "NotFound": "404", "IdempotencyConflict": "409",
                "PayloadTooLarge": "413", "InvalidBatch": "422", "InvalidQuery": "422", "RateLimited": "429",
                "OverCapacity": "503"}
    return {statuses[name]: name for name in names}
