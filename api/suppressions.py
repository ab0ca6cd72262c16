"""The /v1/suppressions routes: a tenant's list of numbers its batches never dial.

Numbers are normalised to E.164 as a call's are, so `+1 (415) 555-2671` and `+14155552671` are
one entry. A number added while a batch runs is not dialed after the answer: the start of each
attempt looks it up (`store.attempts.start_attempt`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from api.batches import _decode_cursor, _encode_cursor, _int_arg, current_engine, json_body
from batchcalls.adapters.store import suppressions
from batchcalls.domain.errors import InvalidPhoneNumber, InvalidRequest, NotFound
from batchcalls.domain.timefmt import isoformat_ms
from batchcalls.domain.validation import check_phone_numbers, normalize_phone_number

bp = Blueprint("suppressions", __name__, url_prefix="/v1")

MAX_NUMBERS = 10_000  # a POST's numbers; a longer list is sent in several requests
MAX_REASON = 500
FIELDS = frozenset({"phone_numbers", "reason"})
NOT_A_NUMBER = "must be a valid number in international E.164 form, like +14155552671"


def suppression_view(row: dict[str, Any]) -> dict[str, Any]:
    return {"phone_number": row["phone_number"], "reason": row["reason"], "created_at": isoformat_ms(row["created_at"])}


def _request() -> tuple[list[str], str | None]:
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", {"_schema": ["not an object"]})
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(unknown)}", {name: ["unknown field"] for name in unknown})
    raws = body.get("phone_numbers")
    if not isinstance(raws, list) or not 1 <= len(raws) <= MAX_NUMBERS:
        raise InvalidRequest(
            f"phone_numbers must be a list of 1 to {MAX_NUMBERS} numbers",
            {"phone_numbers": [f"must be a list of 1..{MAX_NUMBERS} strings"]},
        )
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON or "\x00" in reason):
        raise InvalidRequest(
            f"reason must be a string of at most {MAX_REASON} characters",
            {"reason": [f"must be a string of at most {MAX_REASON} characters"]},
        )
    return check_phone_numbers(raws, "phone_numbers"), reason


def _number(raw: str, field: str) -> str:
    number = normalize_phone_number(raw)
    if number is None:
        message = NOT_A_NUMBER
        raise InvalidPhoneNumber(f"invalid phone number: {field}: {message}", {field: [message]})
    return number


@bp.post("/suppressions")
def add_suppressions() -> tuple[Response, int]:
    numbers, reason = _request()
    with current_engine().db.transaction() as cur:
        added = suppressions.add(cur, g.tenant.id, numbers, reason)
    distinct = len(set(numbers))
    return jsonify({"added": added, "already_suppressed": distinct - added, "phone_numbers": numbers}), 201


@bp.get("/suppressions")
def list_suppressions() -> Response:
    limit = _int_arg("limit", 100, 1, 1000)
    raw = request.args.get("phone_number")
    number = None if raw is None else _number(raw, "phone_number")
    after = _decode_cursor(request.args.get("cursor"))
    if after is not None and (type(after) is not str or "\x00" in after):
        raise InvalidRequest("cursor is not one this API gave", {"cursor": ["invalid cursor"]})
    with current_engine().db.transaction() as cur:
        rows = suppressions.page(cur, g.tenant.id, limit + 1, after, number)
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1]["phone_number"]) if len(rows) > limit else None
    return jsonify({"suppressions": [suppression_view(r) for r in page], "next_cursor": next_cursor})


@bp.delete("/suppressions/<phone_number>")
def remove_suppression(phone_number: str) -> tuple[str, int]:
    number = _number(phone_number, "phone_number")
    with current_engine().db.transaction() as cur:
        if not suppressions.remove(cur, g.tenant.id, number):
            raise NotFound(f"{number} is not suppressed")
    return "", 204
