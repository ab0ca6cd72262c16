"""The /v1/batches routes."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from api import csv_upload
from api.errors import TOO_LARGE_MESSAGE
from api.schemas import check_storable_text, load_batch_request
from batchcalls.adapters.delivery.targets import check_callback_url
from batchcalls.adapters.store import batches, calls
from batchcalls.domain.call_lists import MAX_LISTED, skipped_view
from batchcalls.domain.errors import InvalidRequest, MalformedRequest, NotFound, PayloadTooLarge
from batchcalls.domain.payloads import batch_view, call_summary, call_view
from batchcalls.domain.states import CallStatus
from batchcalls.domain.timefmt import isoformat_ms
from batchcalls.domain.validation import build_batch, check_call_count
from batchcalls.domain.voices import voice_catalog
from batchcalls.engine import Engine

bp = Blueprint("batches", __name__, url_prefix="/v1")

CALL_STATUSES = tuple(status.value for status in CallStatus)


def current_engine() -> Engine:
    engine: Engine = current_app.extensions["batchcalls.engine"]
    return engine


# A string PostgreSQL cannot store (NUL, an unpaired surrogate) can only arrive as a \u escape,
# so only a body holding one of these escapes is searched string by string.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def json_body() -> Any:
    raw = request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # A body without Content-Length (chunked) is cut at the limit by werkzeug, not refused:
    # one more byte behind the cut means it was too large.
    if (
        request.content_length is None
        and limit is not None
        and len(raw) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise PayloadTooLarge(TOO_LARGE_MESSAGE)
    try:
        # NaN and Infinity are not JSON (RFC 8259) and PostgreSQL's jsonb refuses them.
        body = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise MalformedRequest(f"request body is not valid JSON: {reason}") from exc
    if _SUSPECT_ESCAPE.search(raw):
        check_storable_text(body)
    return body


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", {name: ["not an integer"]}) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", {name: [f"must be {low}..{high}"]})
    return value


def _encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode_cursor(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), parse_constant=_not_json)
    except (ValueError, binascii.Error, RecursionError):
        raise _bad_cursor() from None


def _bad_cursor() -> InvalidRequest:
    return InvalidRequest("cursor is not one this API gave", {"cursor": ["invalid cursor"]})


def _calls_cursor(raw: str | None) -> int:
    """The seq after which a page of calls starts (-1: from the first call)."""
    after = _decode_cursor(raw)
    if after is None:
        return -1
    # type(): True is an int to isinstance. seq is a PostgreSQL integer.
    if type(after) is not int or not 0 <= after < 2**31:
        raise _bad_cursor()
    return after


def _batches_cursor(raw: str | None) -> tuple[str, str] | None:
    """(created_at ISO, batch id) of the last batch of the previous page."""
    after = _decode_cursor(raw)
    if after is None:
        return None
    if isinstance(after, list) and len(after) == 2 and all(type(v) is str and "\x00" not in v for v in after):
        try:
            created_at = datetime.fromisoformat(after[0])
        except ValueError:
            raise _bad_cursor() from None
        if created_at.tzinfo is not None:
            return created_at.isoformat(), after[1]
    raise _bad_cursor()


def own_batch(cur: Any, batch_id: str) -> dict[str, Any]:
    # No id holds a NUL, and PostgreSQL refuses one in a query parameter.
    row = None if "\x00" in batch_id else batches.get_batch(cur, batch_id, g.tenant.id)
    if row is None:
        raise NotFound(f"no batch {batch_id}")
    return row


def status_body(batch_id: str, calls_limit: int | None) -> dict[str, Any]:
    with current_engine().db.transaction() as cur:
        row = own_batch(cur, batch_id)
        body = batch_view(row, batches.status_counts(cur, batch_id))
        if calls_limit is not None:
            body["calls"] = [call_summary(c) for c in calls.list_calls(cur, batch_id, calls_limit, -1, None)]
    return body


_WARM_UP_BODY = {
    "calls": [{"phone_number": "+442071234567", "script": {"text": "Hello."}}],
    "callback_url": "https://example.com/hook",
    "priority": 5,
    "concurrency": 1,
}


def warm_up(max_concurrency: int) -> None:
    """Check a sample body as `create_batch` checks one, without I/O (the callback URL is not
    looked up): the checks compile their patterns on first use (marshmallow's URL pattern
    alone takes 50 ms), which a process's first POST would otherwise pay."""
    build_batch(load_batch_request(_WARM_UP_BODY), max_concurrency=max_concurrency, voices=voice_catalog())


@bp.post("/batches")
def create_batch() -> tuple[Response, int]:
    engine = current_engine()
    policy = g.tenant.policy.over(engine.settings.tenant_defaults)
    if csv_upload.is_csv():
        batch_id, created = csv_upload.submit_csv(engine, policy, _idempotency_key())
        return _accepted(batch_id, replayed=not created)
    body = json_body()
    key = _idempotency_key()
    if key is not None and (replayed := engine.replay(g.tenant, key, body)) is not None:
        return _accepted(replayed, replayed=True)
    check_call_count(body, policy)
    data = load_batch_request(body)
    batch = build_batch(
        data,
        max_concurrency=engine.settings.max_concurrency,
        voices=voice_catalog(),
        destinations=policy.destinations,
        now=datetime.now(UTC),
    )
    if batch.calling_window is None and policy.calling_window is not None:
        batch = replace(batch, calling_window=policy.calling_window)  # the tenant's default window
    if batch.callback_url is not None:
        check_callback_url(
            batch.callback_url,
            allow_http=engine.settings.allow_http_callbacks,
            allowlist=engine.settings.callback_allowlist,
        )
    batch_id, created = engine.submit(g.tenant, batch, key, body)
    return _accepted(batch_id, replayed=not created)


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters", {"Idempotency-Key": ["bad length"]})
    if key is not None and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise InvalidRequest(
            "Idempotency-Key must not hold control characters", {"Idempotency-Key": ["control character"]}
        )
    return key


def _accepted(batch_id: str, *, replayed: bool) -> tuple[Response, int]:
    """The 202: the status body, and the calls skipped at submit (`invalid_numbers: skip`)."""
    body = status_body(batch_id, 100)
    with current_engine().db.transaction() as cur:
        count, rows = calls.skipped_calls(cur, batch_id, MAX_LISTED)
    body.update(skipped_calls=count, skipped=[skipped_view(row) for row in rows])
    response = jsonify(body)
    response.headers["Location"] = f"/v1/batches/{batch_id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 202


@bp.get("/batches/<batch_id>")
def get_batch(batch_id: str) -> Response:
    return jsonify(status_body(batch_id, _int_arg("calls_limit", 100, 0, 1000)))


@bp.get("/batches/<batch_id>/calls")
def list_batch_calls(batch_id: str) -> Response:
    limit = _int_arg("limit", 100, 1, 1000)
    status = request.args.get("status")
    if status is not None and status not in CALL_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(CALL_STATUSES)}", {"status": ["unknown status"]})
    after = _calls_cursor(request.args.get("cursor"))
    with current_engine().db.transaction() as cur:
        own_batch(cur, batch_id)
        rows = calls.list_calls(cur, batch_id, limit + 1, after, status)
        page = rows[:limit]
        attempts = calls.attempts_of(cur, [r["id"] for r in page])
    next_cursor = _encode_cursor(page[-1]["seq"]) if len(rows) > limit else None
    return jsonify({"calls": [call_view(r, attempts[r["id"]]) for r in page], "next_cursor": next_cursor})


@bp.get("/batches")
def list_all_batches() -> Response:
    limit = _int_arg("limit", 20, 1, 100)
    after = _batches_cursor(request.args.get("cursor"))
    with current_engine().db.transaction() as cur:
        rows = batches.list_batches(cur, g.tenant.id, limit + 1, after)
        page = rows[:limit]
        bodies = [batch_view(r, batches.status_counts(cur, r["id"])) for r in page]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = _encode_cursor([last["created_at"].isoformat(), last["id"]])
    return jsonify({"batches": bodies, "next_cursor": next_cursor})


__all__ = ["bp", "isoformat_ms"]
