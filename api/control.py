"""The control routes of a batch: `POST /v1/batches/<id>/pause`, `/resume` and `/cancel`.

Each is idempotent (a repeated command changes nothing and writes no event) and answers the
batch's status body, as `GET /v1/batches/<id>` does.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from api.batches import current_engine, json_body, status_body
from batchcalls.domain.commands import Command
from batchcalls.domain.errors import InvalidRequest, NotFound

bp = Blueprint("control", __name__, url_prefix="/v1")

# The fields each command's body may hold; the body itself is optional.
BODY_FIELDS: dict[Command, frozenset[str]] = {
    Command.PAUSE: frozenset(),
    Command.RESUME: frozenset(),
    Command.CANCEL: frozenset({"hangup_live_calls"}),
}


def _options(command: Command) -> dict[str, Any]:
    if not request.get_data(cache=True).strip():
        return {}
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", {"_schema": ["not an object"]})
    unknown = sorted(set(body) - BODY_FIELDS[command])
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(unknown)}", {name: ["unknown field"] for name in unknown})
    hang_up = body.get("hangup_live_calls", False)
    if type(hang_up) is not bool:
        raise InvalidRequest("hangup_live_calls must be true or false", {"hangup_live_calls": ["not a boolean"]})
    return {"hang_up": hang_up} if command is Command.CANCEL else {}


def _command(batch_id: str, command: Command) -> Response:
    options = _options(command)
    if "\x00" in batch_id:  # no id holds a NUL, and PostgreSQL refuses one in a parameter
        raise NotFound(f"no batch {batch_id}")
    current_engine().command(g.tenant.id, batch_id, command, **options)
    return jsonify(status_body(batch_id, 100))


@bp.post("/batches/<batch_id>/pause")
def pause_batch(batch_id: str) -> Response:
    return _command(batch_id, Command.PAUSE)


@bp.post("/batches/<batch_id>/resume")
def resume_batch(batch_id: str) -> Response:
    return _command(batch_id, Command.RESUME)


@bp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> Response:
    return _command(batch_id, Command.CANCEL)
