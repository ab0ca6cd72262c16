"""What the dashboard's pages show, from store rows: plain functions over plain data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from batchcalls.domain.payloads import batch_view
from batchcalls.domain.states import ACTIVE_BATCH_STATUSES, FINAL_BATCH_STATUSES, BatchStatus, Outcome
from batchcalls.domain.timefmt import isoformat_ms

BATCH_STATUSES = tuple(status.value for status in BatchStatus)
OUTCOMES = tuple(outcome.value for outcome in Outcome)


def shown_time(value: datetime | None) -> str:
    """A time as the page shows it: UTC to the second, or a dash."""
    text = isoformat_ms(value)
    return "—" if text is None else text[:19].replace("T", " ") + " UTC"


def done_calls(row: dict[str, Any]) -> int:
    return int(row["completed_calls"] + row["failed_calls"] + row["cancelled_calls"])


def batch_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A batch in the list: its counters from its own row (no scan of its calls)."""
    total, done = int(row["total_calls"]), done_calls(row)
    return {
        "id": row["id"],
        "status": row["status"],
        "total": total,
        "done": done,
        "percent": round(100 * done / total) if total else 100,
        "completed": row["completed_calls"],
        "failed": row["failed_calls"],
        "cancelled": row["cancelled_calls"],
        "created": shown_time(row.get("created_at")),
        "started": shown_time(row.get("started_at")),
        "finished": shown_time(row.get("finished_at")),
    }


def delivery_state(event: dict[str, Any]) -> str:
    """delivered, given up, retrying (after a failure) or pending (not tried yet)."""
    if event["delivered_at"] is not None:
        return "delivered"
    if event["given_up_at"] is not None:
        return "given up"
    return "retrying" if event["delivery_attempts"] else "pending"


def event_view(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["id"],
        "type": event["type"],
        "created": shown_time(event["created_at"]),
        "state": delivery_state(event),
        "attempts": event["delivery_attempts"],
        "next_attempt": shown_time(event["next_attempt_at"]) if delivery_state(event) == "retrying" else "—",
        "last_error": event["last_error"] or "",
    }


def batch_detail(
    row: dict[str, Any], tally: dict[str, Any], events: list[dict[str, Any]], limits: dict[str, Any]
) -> dict[str, Any]:
    """The batch page's figures (also its live JSON): the status body of the API, the calls by
    outcome, dials so far, the next scheduled opening, the limits in use, the newest events."""
    body = batch_view(row, tally["by_status"])
    total = int(row["total_calls"])
    done = done_calls(row)
    outcomes = [{"outcome": name, "calls": tally["by_outcome"].get(name, 0)} for name in OUTCOMES]
    status = BatchStatus(row["status"])
    return {
        "batch": body,
        "done": done,
        "percent": round(100 * done / total) if total else 100,
        "outcomes": outcomes,
        "widest": max([o["calls"] for o in outcomes] + [1]),
        "dials": tally["dials"],
        "next_opening": shown_time(tally["next_opening"]),
        "limits": limits,
        "events": [event_view(e) for e in events],
        "final": status in FINAL_BATCH_STATUSES,
        "can_pause": status in ACTIVE_BATCH_STATUSES and status is not BatchStatus.PAUSED,
        "can_resume": status is BatchStatus.PAUSED,
        "can_cancel": status in ACTIVE_BATCH_STATUSES,
        "times": {
            "created": shown_time(row.get("created_at")),
            "started": shown_time(row.get("started_at")),
            "finished": shown_time(row.get("finished_at")),
        },
    }
