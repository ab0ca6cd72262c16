"""The batches list, a batch's page with its live figures, and its actions: pause, resume,
cancel (each through a confirmation step) and suppressing a number."""

from __future__ import annotations

from typing import Any

from flask import Response, flash, g, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from api.batches import _batches_cursor, _encode_cursor, current_engine, own_batch
from api.dashboard.blueprint import bp, context
from api.dashboard.views import BATCH_STATUSES, batch_detail, batch_summary
from batchcalls.adapters.store import overview, suppressions
from batchcalls.domain.commands import Command
from batchcalls.domain.errors import InvalidRequest
from batchcalls.domain.validation import normalize_phone_number

PAGE_SIZE = 25
EVENTS_SHOWN = 20
MAX_REASON = 500


def _status_filter() -> str | None:
    status = request.args.get("status") or None
    if status is not None and status not in BATCH_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(BATCH_STATUSES)}", {"status": ["unknown status"]})
    return status


@bp.get("/batches")
def batches() -> str:
    status = _status_filter()
    after = _batches_cursor(request.args.get("cursor") or None)
    with context().db.transaction() as cur:
        rows = overview.batches_page(cur, g.tenant.id, PAGE_SIZE + 1, after, status)
    page = rows[:PAGE_SIZE]
    next_cursor = None
    if len(rows) > PAGE_SIZE:
        next_cursor = _encode_cursor([page[-1]["created_at"].isoformat(), page[-1]["id"]])
    return render_template(
        "dashboard/batches.html",
        batches=[batch_summary(r) for r in page],
        status=status,
        statuses=BATCH_STATUSES,
        next_cursor=next_cursor,
        first_page=after is None,
    )


def _limits(row: dict[str, Any]) -> dict[str, Any]:
    """The concurrency and calls-per-second the batch is held to."""
    policy = g.tenant.policy.over(context().settings.tenant_defaults)
    cps = policy.max_calls_per_second or context().settings.cps_limit
    return {
        "concurrency": row["concurrency"],
        "tenant_concurrency": policy.max_concurrent_calls,
        "calls_per_second": cps,
    }


def _detail(batch_id: str) -> dict[str, Any]:
    with context().db.transaction() as cur:
        row = own_batch(cur, batch_id)
        tally = overview.call_tally(cur, batch_id)
        events = overview.newest_events(cur, batch_id, EVENTS_SHOWN)
    return batch_detail(row, tally, events, _limits(row))


@bp.get("/batches/<batch_id>")
def batch(batch_id: str) -> str:
    return render_template("dashboard/batch.html", d=_detail(batch_id))


@bp.get("/batches/<batch_id>/live")
def batch_live(batch_id: str) -> Response:
    """The batch page's figures as JSON, polled by dashboard.js (at most once a second)."""
    return jsonify(_detail(batch_id))


HISTORY_SPANS = 60


@bp.get("/batches/<batch_id>/history")
def batch_history(batch_id: str) -> Response:
    """Dials and live calls over the batch's whole life, in `HISTORY_SPANS` equal spans, for the
    page's chart (dashboard.js reads it on opening and every few seconds while the batch runs)."""
    with context().db.transaction() as cur:
        own_batch(cur, batch_id)
        seconds, spans = overview.dial_history(cur, batch_id, HISTORY_SPANS)
    return jsonify(
        {
            "span_seconds": seconds,
            "spans": [{"dials": dials, "live": live} for dials, live in spans],
        }
    )


COMMANDS = {"pause": Command.PAUSE, "resume": Command.RESUME, "cancel": Command.CANCEL}


@bp.post("/batches/<batch_id>/<action>")
def command(batch_id: str, action: str) -> BaseResponse | str:
    """An action's form posts here; without `confirmed` it answers the confirmation page, whose
    form posts again with it. The command is the API's (`Engine.command`)."""
    chosen = COMMANDS.get(action)
    with context().db.transaction() as cur:
        own_batch(cur, batch_id)  # another tenant's batch: 404 before anything else
    if chosen is None:
        raise BadRequest(f"no action {action}")
    hang_up = request.form.get("hangup_live_calls") == "yes"
    if request.form.get("confirmed") != "yes":
        return render_template("dashboard/confirm.html", batch_id=batch_id, action=action, hang_up=hang_up)
    current_engine().command(g.tenant.id, batch_id, chosen, hang_up=hang_up if chosen is Command.CANCEL else False)
    flash(f"Batch {batch_id}: {action} done.")
    return redirect(url_for("dashboard.batch", batch_id=batch_id), 303)


@bp.post("/suppressions")
def suppress() -> BaseResponse:
    """Add a number to the tenant's suppression list, as POST /v1/suppressions does."""
    raw = request.form.get("phone_number", "")
    reason = request.form.get("reason", "").strip() or None
    back = request.form.get("batch_id") or None
    target = url_for("dashboard.batch", batch_id=back) if back else url_for("dashboard.batches")
    if back:
        with context().db.transaction() as cur:
            own_batch(cur, back)
    number = normalize_phone_number(raw) if "\x00" not in raw else None
    if number is None:
        flash(f"Not suppressed: {raw!r} is not a phone number in international form, like +14155552671.", "error")
        return redirect(target, 303)
    if reason is not None and (len(reason) > MAX_REASON or "\x00" in reason):
        flash(f"Not suppressed: the reason must be at most {MAX_REASON} characters.", "error")
        return redirect(target, 303)
    with context().db.transaction() as cur:
        added = suppressions.add(cur, g.tenant.id, [number], reason)
    flash(f"{number} suppressed." if added else f"{number} was already suppressed.")
    return redirect(target, 303)
