"""The fleet page: workers seen, queue depths, calls per second against the limit, the delivery
backlog, with links to Flower (BATCHCALLS_FLOWER_URL) and /metrics."""

from __future__ import annotations

from flask import Response, g, jsonify, render_template

from api.dashboard.blueprint import bp, context


@bp.get("/fleet")
def fleet() -> str:
    return render_template("dashboard/fleet.html", f=context().fleet.figures(g.tenant.id))


@bp.get("/fleet/live")
def fleet_live() -> Response:
    """The fleet's figures as JSON (dashboard.js polls them and turns dials into a rate)."""
    return jsonify(context().fleet.figures(g.tenant.id))


@bp.get("/fleet/workers")
def fleet_workers() -> Response:
    """The workers that answer a ping within a second: asked after the page is shown, so the
    page never waits for them."""
    return jsonify({"workers": context().fleet.workers()})
