"""The /v1/batches routes."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from api.schemas import load_batch_request
from batchcalls.callbacks import check_callback_url
from batchcalls.engine import Engine
from batchcalls.errors import InvalidRequest, MalformedRequest, NotFound
from batchcalls.store import batches, calls
from batchcalls.timefmt import isoformat_ms
from batchcalls.validation import build_batch
from batchcalls.views import batch_view, call_summary, call_view
from batchcalls.voices import voice_catalog

bp = Blueprint("batches", __name__, url_prefix="/v1")

CALL_STATUSES = ("queued", "scheduled", "dialing", "ringing", "in_progress", "completed", "failed", "cancelled")


def _engine() -> Engine:
    engine: Engine = current_app.extensions["batchcalls.engine"]
    return engine


def _json_body() -> Any:
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from exc


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
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidRequest("cursor is not one this API gave", {"cursor": ["invalid cursor"]}) from None


def _status_body(batch_id: str, calls_limit: int | None) -> dict[str, Any]:
    with _engine().db.transaction() as cur:
        row = batches.get_batch(cur, batch_id, g.tenant.id)
        if row is None:
            raise NotFound(f"no batch {batch_id}")
        body = batch_view(row, batches.status_counts(cur, batch_id))
        if calls_limit is not None:
            body["calls"] = [call_summary(c) for c in calls.list_calls(cur, batch_id, calls_limit, -1, None)]
    return body


@bp.post("/batches")
def create_batch() -> tuple[Response, int]:
    engine = _engine()
    body = _json_body()
    data = load_batch_request(body)
    batch = build_batch(data, max_concurrency=engine.settings.max_concurrency, voices=voice_catalog())
    if batch.callback_url is not None:
        check_callback_url(batch.callback_url, allow_http=engine.settings.allow_http_callbacks,
                           allowlist=engine.settings.callback_allowlist)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters", {"Idempotency-Key": ["bad length"]})
    batch_id, created = engine.submit(g.tenant, batch, key, body)
    response = jsonify(_status_body(batch_id, 100))
    response.headers["Location"] = f"/v1/batches/{batch_id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 202


@bp.get("/batches/<batch_id>")
def get_batch(batch_id: str) -> Response:
    return jsonify(_status_body(batch_id, _int_arg("calls_limit", 100, 0, 1000)))


@bp.get("/batches/<batch_id>/calls")
def list_batch_calls(batch_id: str) -> Response:
    limit = _int_arg("limit", 100, 1, 1000)
    status = request.args.get("status")
    if status is not None and status not in CALL_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(CALL_STATUSES)}", {"status": ["unknown status"]})
    after = _decode_cursor(request.args.get("cursor"))
    if after is not None and not isinstance(after, int):
        raise InvalidRequest("cursor is not one this API gave", {"cursor": ["invalid cursor"]})
    with _engine().db.transaction() as cur:
        if batches.get_batch(cur, batch_id, g.tenant.id) is None:
            raise NotFound(f"no batch {batch_id}")
        rows = calls.list_calls(cur, batch_id, limit + 1, -1 if after is None else after, status)
        page = rows[:limit]
        attempts = calls.attempts_of(cur, [r["id"] for r in page])
    next_cursor = _encode_cursor(page[-1]["seq"]) if len(rows) > limit else None
    return jsonify({"calls": [call_view(r, attempts[r["id"]]) for r in page], "next_cursor": next_cursor})


@bp.get("/batches")
def list_all_batches() -> Response:
    limit = _int_arg("limit", 20, 1, 100)
    after = _decode_cursor(request.args.get("cursor"))
    if after is not None and not (isinstance(after, list) and len(after) == 2):
        raise InvalidRequest("cursor is not one this API gave", {"cursor": ["invalid cursor"]})
    with _engine().db.transaction() as cur:
        rows = batches.list_batches(cur, g.tenant.id, limit + 1, tuple(after) if after else None)
        page = rows[:limit]
        bodies = [batch_view(r, batches.status_counts(cur, r["id"])) for r in page]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = _encode_cursor([last["created_at"].isoformat(), last["id"]])
    return jsonify({"batches": bodies, "next_cursor": next_cursor})


__all__ = ["bp", "isoformat_ms"]
