"""The dashboard's blueprint: the session guard in front of every page, sign-in and sign-out,
and the HTML answers to errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from api.dashboard import access
from api.dashboard.fleet_reads import FleetView
from api.ratelimit import RequestLimits
from batchcalls.adapters.store.db import Database
from batchcalls.domain.errors import BatchcallsError, RetryLater
from config.settings import Settings

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix=access.PATH,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

OPEN_ENDPOINTS = frozenset({"dashboard.sign_in", "dashboard.static"})
# Served to every dashboard answer: nothing from elsewhere, no framing, no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Context:
    settings: Settings
    db: Database
    budgets: RequestLimits
    fleet: FleetView


def context() -> Context:
    found: Context = current_app.extensions["batchcalls.dashboard"]
    return found


@bp.before_request
def guard() -> BaseResponse | None:
    if request.endpoint == "dashboard.static":
        return None
    if current_app.session_interface.is_null_session(session):
        response = _page(
            "dashboard/error.html",
            503,
            message="Sessions are unavailable: Redis, which keeps the secret that signs them, cannot be reached"
            " (BATCHCALLS_DASHBOARD_SECRET would do without it). Try again shortly.",
        )
        response.headers["Retry-After"] = "5"
        return response
    if request.method == "POST":
        access.check_csrf()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if access.signed_in_tenant(context().db) is None:
        if request.method != "GET":
            return _page("dashboard/error.html", 403, message="Sign in first.")
        return redirect(url_for("dashboard.sign_in", next=request.full_path.rstrip("?")))
    return None


@bp.after_request
def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.context_processor
def template_globals() -> dict[str, Any]:
    return {"csrf_token": access.csrf_token, "tenant": g.get("tenant"), "csrf_field": access.CSRF_FIELD}


def _page(template: str, status: int, **values: Any) -> Response:
    response = current_app.make_response(render_template(template, **values))
    response.status_code = status
    return response


@bp.errorhandler(BatchcallsError)
def domain_error(exc: BatchcallsError) -> Response:
    response = _page("dashboard/error.html", exc.http_status, message=exc.message)
    if isinstance(exc, RetryLater):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    return _page("dashboard/error.html", exc.code or 500, message=exc.description or exc.name)


def _next_page(raw: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if raw and raw.startswith(access.PATH + "/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return url_for("dashboard.batches")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> BaseResponse:
    target = _next_page(request.values.get("next"))
    if request.method == "GET":
        if access.signed_in_tenant(context().db) is not None:
            return redirect(target)
        return _page("dashboard/sign_in.html", 200, next=target, failed=False)
    ctx = context()
    if access.sign_in(ctx.db, ctx.budgets, request.form.get("api_key", "").strip()) is None:
        return _page("dashboard/sign_in.html", 401, next=target, failed=True)
    return redirect(target, 303)


@bp.post("/sign-out")
def sign_out() -> BaseResponse:
    session.clear()
    flash("Signed out.")
    return redirect(url_for("dashboard.sign_in"), 303)


@bp.get("/")
def home() -> BaseResponse:
    return redirect(url_for("dashboard.batches"))
