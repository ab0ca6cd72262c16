"""The error answers of the published contract: one OpenAPI response per kind, each with an
example body for every code it may carry. The 422 examples are made by the real checks from bad
bodies, so their messages are the API's own. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import limits

from api import doc_schemas as docs
from api.ratelimit import FAILED_AUTH_POLICY, TENANT_POLICY, Policy
from api.schemas import load_batch_request
from batchcalls.domain.destinations import DestinationPolicy
from batchcalls.domain.errors import BatchcallsError
from batchcalls.domain.policy import Policy as TenantLimits
from batchcalls.domain.validation import build_batch, check_call_count


def _error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _caught(check: Callable[[], object], what: object) -> dict[str, Any]:
    """The error body the API answers with when `check` refuses `what`."""
    try:
        check()
    except BatchcallsError as exc:
        return _error_body(exc.code, exc.message, exc.details)
    raise AssertionError(f"an example of an error was accepted: {what}")


def _validation_examples(max_concurrency: int, voices: Mapping[str, object], defaults: TenantLimits) -> dict[str, Any]:
    call = {"phone_number": "+14155552671", "script": {"text": "Hello."}}
    # A tenant whose policy allows two countries, its number types blocked as the defaults block them:
    # a premium-rate number, a satellite phone and a number in a third country.
    allowlisted = DestinationPolicy(frozenset({"US", "GB"}), frozenset(defaults.blocked_number_types))
    blocked = [{**call, "phone_number": number} for number in ("+449012345678", "+881612345678", "+4930123456")]
    bodies: dict[str, tuple[str, dict[str, Any], DestinationPolicy]] = {
        "invalid_request": ("invalid_request", {"calls": [call], "colour": "red"}, defaults.destinations),
        "invalid_phone_number": (
            "invalid_phone_number",
            {"calls": [{**call, "phone_number": "+1 555"}, {**call, "phone_number": "4155552671"}]},
            defaults.destinations,
        ),
        "destination_not_allowed": (
            "destination_not_allowed (a tenant allowed to call US and GB only)",
            {"calls": blocked},
            allowlisted,
        ),
        "duplicate_phone_number": (
            'duplicate_phone_number (unless the body says "dedupe": false)',
            {"calls": [call, {**call, "phone_number": "+1 (415) 555-2671"}]},
            defaults.destinations,
        ),
        "invalid_script": (
            "invalid_script",
            {
                "calls": [
                    {**call, "script": {"text": " "}},
                    {**call, "phone_number": "+14155552672", "voice_id": "robot"},
                ]
            },
            defaults.destinations,
        ),
        "concurrency_limit": (
            "concurrency_limit",
            {"calls": [call], "concurrency": max_concurrency + 1},
            defaults.destinations,
        ),
    }
    examples = {}
    for name, (summary, body, policy) in bodies.items():

        def check(body: dict[str, Any] = body, policy: DestinationPolicy = policy) -> object:
            return build_batch(
                load_batch_request(body), max_concurrency=max_concurrency, voices=voices, destinations=policy
            )

        examples[name] = {"summary": summary, "value": _caught(check, body)}
    # One batch larger than a batch may be: checked on the parsed body before anything else.
    oversized = {"calls": [call] * (min(defaults.max_calls_per_batch, defaults.max_queued_calls) + 1)}
    examples["too_many_calls"] = {
        "summary": "invalid_request (too many calls in one batch)",
        "value": _caught(lambda: check_call_count(oversized, defaults), "a batch one call over the limit"),
    }
    return examples


RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer", "minimum": 0}}
}


def _budget(name: str, text: str) -> Policy:
    return Policy(name, limits.parse(text))


def rate_limit_headers(policy: Policy, *, note: str = "") -> dict[str, Any]:
    """The draft-ietf-httpapi-ratelimit-headers fields `api.ratelimit.Standing.apply` sets. Optional:
    an answer carries them only when the budget could be counted (Redis reachable)."""
    return {
        "RateLimit-Policy": {
            "description": "The request budget that counted this request: its name, quota `q` and"
            f" window `w` in seconds.{note}",
            "required": False,
            "schema": {"type": "string"},
            "example": policy.field(),
        },
        "RateLimit": {
            "description": "What is left of that budget: `r` requests remaining, `t` seconds until the"
            " oldest request of the window stops counting.",
            "required": False,
            "schema": {"type": "string"},
            "example": f'"{policy.name}";r={policy.item.amount - 1};t={policy.window}',
        },
    }


def counted_headers(rate_limit: str) -> dict[str, Any]:
    """The budget fields of an answer to an authenticated /v1 request."""
    return rate_limit_headers(
        _budget(TENANT_POLICY, rate_limit), note=f' `"{FAILED_AUTH_POLICY}"` when the request failed authentication.'
    )


def _error(description: str, examples: dict[str, dict[str, Any]], headers: dict[str, Any]) -> dict[str, Any]:
    """A response with the error body; `examples` maps each code it may carry to an example body."""
    codes = ", ".join(f"`{code}`" for code in dict.fromkeys(e["value"]["error"]["code"] for e in examples.values()))
    return {
        "description": f"{description} Code: {codes}.",
        "content": {"application/json": {"schema": docs.ErrorSchema, "examples": examples}},
        "headers": headers,
    }


def _example(
    code: str, message: str, details: Any = None, *, name: str | None = None, summary: str | None = None
) -> dict[str, dict[str, Any]]:
    return {name or code: {"summary": summary or code, "value": _error_body(code, message, details)}}


def error_responses(
    max_concurrency: int,
    voices: Mapping[str, object],
    *,
    rate_limit: str,
    auth_failure_limit: str,
    defaults: TenantLimits,
) -> dict[str, dict[str, Any]]:
    """The reusable error responses (components/responses), by name. `defaults` is the policy of a
    tenant with no values of its own (settings' `tenant_defaults`)."""
    tenant, failed_auth = _budget(TENANT_POLICY, rate_limit), _budget(FAILED_AUTH_POLICY, auth_failure_limit)
    counted = counted_headers(rate_limit)
    limited = {**RETRY_AFTER, **counted}
    too_many = {
        **_example(
            "rate_limited",
            f"too many requests for this account (at most {tenant.item}); retry in 12 s",
            summary="rate_limited (the tenant's budget)",
        ),
        **_example(
            "rate_limited",
            "too many requests with a missing or invalid API key from this address; retry in 12 s",
            name="rate_limited_failed_auth",
            summary="rate_limited (this address failed authentication too often)",
        ),
    }
    rate_limited = (
        f"Too many requests: the tenant's budget, spent by all its API keys together (BATCHCALLS_RATE_LIMIT, here"
        f" {rate_limit}), or, before any key is looked up, the client address's budget of failed authentications"
        f" (BATCHCALLS_AUTH_FAILURE_LIMIT, here {auth_failure_limit}). `RateLimit-Policy` names which."
    )
    quota = defaults.max_queued_calls
    return {
        "MalformedJson": _error(
            "The body is not JSON.",
            _example("invalid_request", "request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
            counted,
        ),
        "Unauthorized": _error(
            "Missing or wrong API key. Each such request spends the client address's budget of failed"
            " authentications (`RateLimit-Policy` names `failed-auth`).",
            _example("unauthorized", "missing or invalid API key: send `Authorization: Bearer <api key>`"),
            rate_limit_headers(failed_auth),
        ),
        "NotFound": _error(
            "No such batch, or another tenant's.", _example("not_found", "no batch batch_xyz789"), counted
        ),
        "IdempotencyConflict": _error(
            "The `Idempotency-Key` was used before with a different body.",
            _example(
                "idempotency_conflict",
                "this Idempotency-Key was used with a different request body",
                {"batch_id": "batch_xyz789"},
            ),
            counted,
        ),
        "InvalidState": _error(
            "The batch's state refuses the command: a finished or cancelled batch cannot be paused or resumed,"
            " a finished one cannot be cancelled.",
            _example(
                "invalid_state", "a cancelled batch cannot be paused", {"status": "cancelled", "command": "pause"}
            ),
            counted,
        ),
        "InvalidCommand": _error(
            "The command's body has an unknown field or a wrong type.",
            _example("invalid_request", "unknown fields: hangup", {"hangup": ["unknown field"]}),
            counted,
        ),
        "CommandUnavailable": _error(
            "The command was stored, but Redis, which gates dialing, could not be updated: repeat the request"
            " (commands are idempotent) after `Retry-After` seconds.",
            _example("unavailable", "the batch was paused but its queue could not be updated; repeat the request"),
            {**RETRY_AFTER, **counted},
        ),
        "PayloadTooLarge": _error(
            "The body is larger than BATCHCALLS_MAX_BODY_BYTES.",
            _example("payload_too_large", "request body is larger than BATCHCALLS_MAX_BODY_BYTES allows"),
            counted,
        ),
        "InvalidBatch": _error(
            "The body has the wrong shape (wrong types, unknown fields, bad `retry_config`: `invalid_request`), more"
            " calls than one batch may hold (`invalid_request` naming `calls`: the tenant's `max_calls_per_batch`,"
            f" by default BATCHCALLS_MAX_CALLS_PER_BATCH, here {defaults.max_calls_per_batch}, and never more than"
            " its `max_queued_calls`), an invalid phone number (details name each `calls[i].phone_number`), a valid"
            " number the tenant may not call (`destination_not_allowed`: a blocked number type such as premium-rate"
            " or a satellite phone, or a country outside the tenant's allowlist; with `invalid_numbers: skip` both"
            " are skipped instead, unless every call is), a number repeating an earlier call's, in E.164 form"
            " (`duplicate_phone_number`, unless `dedupe` is false), a missing, empty or too long"
            " script, an unknown step type or `voice_id` (`invalid_script`), or `concurrency` outside 1 and the"
            " account's maximum (`concurrency_limit`).",
            _validation_examples(max_concurrency, voices, defaults),
            counted,
        ),
        "InvalidQuery": _error(
            "A query parameter is out of range or not one this API gave.",
            _example("invalid_request", "limit must be between 1 and 1000", {"limit": ["must be 1..1000"]}),
            counted,
        ),
        "RateLimited": _error(rate_limited, too_many, limited),
        "RateLimitedOrQuotaExceeded": _error(
            f"{rate_limited} Or accepting the batch would take the tenant's calls not yet final above its quota"
            f" (`quota_exceeded`: its `max_queued_calls`, by default BATCHCALLS_TENANT_MAX_QUEUED_CALLS, here"
            f" {quota}); details give the figures.",
            {
                **too_many,
                **_example(
                    "quota_exceeded",
                    f"this account has {quota - 10} calls not yet final; accepting 20 more would exceed"
                    f" its quota of {quota} (max_queued_calls)",
                    {"quota": "max_queued_calls", "limit": quota, "queued_calls": quota - 10, "requested_calls": 20},
                ),
            },
            limited,
        ),
        "Unavailable": _error(
            "Nothing was stored; retry after `Retry-After` seconds. Accepting the batch would take the calls not yet"
            " final, system-wide, above BATCHCALLS_MAX_QUEUED_CALLS (`over_capacity`), or Redis, which queues the"
            " calls, cannot be reached (`unavailable`).",
            {
                **_example(
                    "over_capacity", "999990 calls are waiting system-wide; accepting 20 more would exceed 1000000"
                ),
                **_example(
                    "unavailable",
                    "the service cannot queue calls right now (Redis is unavailable); nothing was stored, retry later",
                ),
            },
            {**RETRY_AFTER, **counted},
        ),
    }


def refs(*names: str) -> dict[str, Any]:
    """An operation's `responses` entries for the named error responses, keyed by their status."""
    statuses = {
        "MalformedJson": "400",
        "Unauthorized": "401",
        "NotFound": "404",
        "IdempotencyConflict": "409",
        "InvalidState": "409",
        "InvalidCommand": "422",
        "CommandUnavailable": "503",
        "PayloadTooLarge": "413",
        "InvalidBatch": "422",
        "InvalidQuery": "422",
        "RateLimited": "429",
        "RateLimitedOrQuotaExceeded": "429",
        "Unavailable": "503",
    }
    return {statuses[name]: name for name in names}
