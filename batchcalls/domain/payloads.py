"""The JSON shapes users see (status body, call body), built from store rows. Pure."""

from __future__ import annotations

from typing import Any

from batchcalls.domain.states import LIVE_STATUSES, PENDING_STATUSES, CallStatus
from batchcalls.domain.timefmt import isoformat_ms


def attempt_view(row: dict[str, Any]) -> dict[str, Any]:
    answered, ended = row.get("answered_at"), row.get("ended_at")
    duration = None
    if answered is not None and ended is not None:
        duration = round((ended - answered).total_seconds(), 3)
    return {
        "number": row["number"],
        "provider_call_id": row.get("provider_call_id"),
        "outcome": row.get("outcome"),
        "dialed_at": isoformat_ms(row.get("dialed_at")),
        "answered_at": isoformat_ms(answered),
        "ended_at": isoformat_ms(ended),
        "duration": duration,
        "voicemail_left": bool(row.get("voicemail_left")),
    }


def call_view(row: dict[str, Any], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    script = row.get("script") or {}
    return {
        "id": row["id"],
        "phone_number": row["phone_number"],
        "status": row["status"],
        "outcome": row.get("outcome"),
        "priority": row["priority"],
        "voice_id": row.get("voice_id"),
        "script_type": script.get("type"),
        "responses": row.get("responses") or [],
        "last_error": row.get("last_error"),
        "next_attempt_at": isoformat_ms(row.get("next_attempt_at")),
        "attempts": [attempt_view(a) for a in sorted(attempts, key=lambda a: a["number"])],
        "metadata": row.get("metadata"),
    }


def call_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "phone_number": row["phone_number"],
        "metadata": row.get("metadata"),
    }


def batch_view(row: dict[str, Any], status_counts: dict[str, int]) -> dict[str, Any]:
    """The status body without `calls`. `status_counts` maps call status to how many calls have it."""
    return {
        "batch_id": row["id"],
        "status": row["status"],
        "total_calls": row["total_calls"],
        "completed_calls": row["completed_calls"],
        "failed_calls": row["failed_calls"],
        "cancelled_calls": row["cancelled_calls"],
        "in_progress": sum(status_counts.get(s, 0) for s in LIVE_STATUSES),
        "pending": sum(status_counts.get(s, 0) for s in PENDING_STATUSES),
        "scheduled": status_counts.get(CallStatus.SCHEDULED, 0),
        "concurrency": row["concurrency"],
        "priority": row["priority"],
        "retry_config": row["retry_config"],
        "callback_url": row.get("callback_url"),
        "metadata": row.get("metadata"),
        "created_at": isoformat_ms(row.get("created_at")),
        "started_at": isoformat_ms(row.get("started_at")),
        "finished_at": isoformat_ms(row.get("finished_at")),
        "expires_at": isoformat_ms(row.get("expires_at")),
        "start_at": isoformat_ms(row.get("start_at")),
        "calling_window": row.get("calling_window"),
    }
