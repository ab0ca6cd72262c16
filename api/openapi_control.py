"""The control routes of a batch (pause, resume, cancel) as apispec operations. No I/O."""

from __future__ import annotations

from typing import Any

from api import doc_schemas as docs
from api.openapi_errors import refs

_WHAT = {
    "pause": (
        "pauseBatch",
        "Pause a batch",
        "No provider call of the batch is created after this answers; live calls end normally and free"
        " their slots; retries that fall due wait. Writes `batch.paused`. Idempotent: pausing a paused"
        " batch changes nothing. A `scheduled` batch can be paused: it stays paused past its `start_at`."
        " A finished or cancelled batch answers `409 invalid_state`.",
    ),
    "resume": (
        "resumeBatch",
        "Resume a paused batch",
        "Dialing continues in priority order under the batch's concurrency (and the calls-per-second"
        " limit). Writes `batch.resumed`. A batch paused while `scheduled` goes back to `scheduled` if its"
        " `start_at` is still ahead. Idempotent: resuming a running batch changes nothing. A finished"
        " or cancelled batch answers `409 invalid_state`.",
    ),
    "cancel": (
        "cancelBatch",
        "Cancel a batch",
        "No provider call of the batch is created after this answers. Every call not yet dialed ends with"
        " status and outcome `cancelled` (counted in `cancelled_calls`), in one step whatever their number."
        " Live calls finish as they would, or, with `hangup_live_calls`, are hung up through the provider and"
        " end `cancelled`. When the last call is final the batch ends `cancelled` and `batch.cancelled`"
        " (instead of `batch.completed`/`batch.failed`) is written, exactly once; until then the status body"
        " shows `cancelled` with `finished_at` null. Idempotent (a second cancel may still hang up live calls);"
        " a finished batch answers `409 invalid_state`.",
    ),
}

CANCEL_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "hangup_live_calls": {
                        "type": "boolean",
                        "default": False,
                        "description": "Hang up the batch's live calls through the provider (they end"
                        " `cancelled`) instead of letting them finish.",
                    }
                },
            },
            "example": {"hangup_live_calls": True},
        }
    },
}


def control_paths(
    batch_id: dict[str, Any], bearer: list[dict[str, list[str]]], counted: dict[str, Any]
) -> dict[str, Any]:
    """`POST /v1/batches/{batch_id}/pause`, `/resume` and `/cancel`."""
    found = {}
    for name, (operation_id, summary, description) in _WHAT.items():
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "summary": summary,
            "description": description,
            "tags": ["batches"],
            "security": bearer,
            "parameters": [batch_id],
            "responses": {
                "200": {
                    "description": "The status body after the command (as `GET /v1/batches/{batch_id}`).",
                    "content": {"application/json": {"schema": docs.BatchStatusSchema}},
                    "headers": counted,
                },
                **refs("MalformedJson", "Unauthorized", "NotFound", "InvalidState", "InvalidCommand"),
                **refs("RateLimited", "CommandUnavailable"),
            },
        }
        if name == "cancel":
            operation["requestBody"] = CANCEL_BODY
        found[f"/v1/batches/{{batch_id}}/{name}"] = {"post": operation}
    return found
