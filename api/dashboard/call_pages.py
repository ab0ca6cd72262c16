"""A batch's calls: searched by number, filtered by status and outcome, paged by submission
order; one call's attempts, responses and last error; the results export, as the API streams it."""

from __future__ import annotations

from typing import Any

from flask import Response, render_template, request
from werkzeug.exceptions import NotFound as PageNotFound

from api.batches import CALL_STATUSES, _calls_cursor, _encode_cursor, own_batch
from api.dashboard.blueprint import bp, context
from api.dashboard.views import OUTCOMES, shown_time
from api.results import export
from batchcalls.adapters.store import calls as call_store
from batchcalls.adapters.store import overview
from batchcalls.domain import results
from batchcalls.domain.errors import InvalidRequest
from batchcalls.domain.validation import normalize_phone_number

PAGE_SIZE = 50


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}", {name: [f"unknown {name}"]})
    return value


def _number() -> tuple[str, str | None]:
    """The search as typed, and the number it names (None: no search)."""
    raw = (request.args.get("number") or "").strip()
    if not raw:
        return "", None
    number = normalize_phone_number(raw) if "\x00" not in raw else None
    if number is None:
        raise InvalidRequest(
            "number must be a phone number in international form, like +14155552671", {"number": ["not a number"]}
        )
    return raw, number


def _row(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call["id"],
        "phone_number": call["phone_number"],
        "status": call["status"],
        "outcome": call["outcome"] or "—",
        "attempts": call["attempt_count"],
        "last_error": call["last_error"] or "",
        "updated": shown_time(call["updated_at"]),
    }


@bp.get("/batches/<batch_id>/calls")
def calls(batch_id: str) -> str:
    status = _choice("status", CALL_STATUSES)
    outcome = _choice("outcome", OUTCOMES)
    typed, number = _number()
    after = _calls_cursor(request.args.get("cursor") or None)
    with context().db.transaction() as cur:
        batch = own_batch(cur, batch_id)
        rows = overview.find_calls(
            cur, batch_id, PAGE_SIZE + 1, after, status=status, outcome=outcome, phone_number=number
        )
    page = rows[:PAGE_SIZE]
    next_cursor = _encode_cursor(page[-1]["seq"]) if len(rows) > PAGE_SIZE else None
    return render_template(
        "dashboard/calls.html",
        batch=batch,
        calls=[_row(r) for r in page],
        statuses=CALL_STATUSES,
        outcomes=OUTCOMES,
        status=status,
        outcome=outcome,
        number=typed,
        next_cursor=next_cursor,
        first_page=after < 0,
    )


@bp.get("/batches/<batch_id>/calls/<call_id>")
def call(batch_id: str, call_id: str) -> str:
    with context().db.transaction() as cur:
        own_batch(cur, batch_id)
        row = None if "\x00" in call_id else overview.own_call(cur, batch_id, call_id)
        if row is None:
            raise PageNotFound(f"no call {call_id} in batch {batch_id}")
        view = call_store.full_call(cur, row)
    for attempt in view["attempts"]:
        for name in ("dialed_at", "answered_at", "ended_at"):
            attempt[name] = (attempt[name] or "—").replace("T", " ")
    return render_template("dashboard/call.html", batch_id=batch_id, call=view)


@bp.get("/batches/<batch_id>/results")
def batch_results(batch_id: str) -> Response:
    """The results export of GET /v1/batches/<id>/results, under the session."""
    chosen = results.choose_format(request.args.get("format"), [])
    db = context().db
    with db.transaction() as cur:
        own_batch(cur, batch_id)
    return export(db, batch_id, chosen)
