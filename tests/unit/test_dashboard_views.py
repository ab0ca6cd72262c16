"""What the dashboard's pages show, from store rows (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from api.dashboard.views import batch_detail, batch_summary, delivery_state, shown_time

AT = datetime(2026, 12, 5, 13, 43, 34, 123000, tzinfo=UTC)


def batch_row(status: str, total: int = 10, completed: int = 3, failed: int = 1, cancelled: int = 0) -> dict[str, Any]:
    return {
        "id": "batch_1",
        "status": status,
        "total_calls": total,
        "completed_calls": completed,
        "failed_calls": failed,
        "cancelled_calls": cancelled,
        "concurrency": 5,
        "priority": 5,
        "retry_config": {},
        "created_at": AT,
        "started_at": AT,
        "finished_at": None,
    }


def event(**fields: Any) -> dict[str, Any]:
    base = {
        "id": "evt_1",
        "type": "batch.started",
        "created_at": AT,
        "delivered_at": None,
        "given_up_at": None,
        "delivery_attempts": 0,
        "next_attempt_at": AT,
        "last_error": None,
    }
    return {**base, **fields}


def test_times_are_shown_in_utc_to_the_second_or_as_a_dash() -> None:
    assert shown_time(AT) == "2026-12-05 13:43:34 UTC"
    assert shown_time(None) == "—"


def test_a_batch_in_the_list_counts_its_final_calls_from_its_row() -> None:
    summary = batch_summary(batch_row("running"))
    assert (summary["done"], summary["total"], summary["percent"]) == (4, 10, 40)
    assert summary["finished"] == "—"
    assert batch_summary(batch_row("completed", total=0, completed=0, failed=0))["percent"] == 100


def test_an_events_delivery_state() -> None:
    assert delivery_state(event()) == "pending"
    assert delivery_state(event(delivery_attempts=2, last_error="HTTP 500")) == "retrying"
    assert delivery_state(event(delivered_at=AT, delivery_attempts=1)) == "delivered"
    assert delivery_state(event(given_up_at=AT, delivery_attempts=30)) == "given up"


def test_the_batch_page_offers_only_the_actions_its_status_allows() -> None:
    tally = {"by_status": {"in_progress": 2}, "by_outcome": {"completed": 3, "busy": 1}, "dials": 7, "next_opening": AT}
    limits = {"concurrency": 5, "tenant_concurrency": None, "calls_per_second": None}
    running = batch_detail(batch_row("running"), tally, [event(delivery_attempts=1)], limits)
    assert (running["can_pause"], running["can_resume"], running["can_cancel"], running["final"]) == (
        True,
        False,
        True,
        False,
    )
    assert running["batch"]["in_progress"] == 2 and running["dials"] == 7
    assert {o["outcome"]: o["calls"] for o in running["outcomes"]}["busy"] == 1
    assert running["widest"] == 3 and running["events"][0]["state"] == "retrying"
    paused = batch_detail(batch_row("paused"), tally, [], limits)
    assert (paused["can_pause"], paused["can_resume"], paused["can_cancel"]) == (False, True, True)
    done = batch_detail(batch_row("completed"), tally, [], limits)
    assert (done["can_pause"], done["can_resume"], done["can_cancel"], done["final"]) == (False, False, False, True)
