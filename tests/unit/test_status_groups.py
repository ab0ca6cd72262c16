"""The status groups every module and query takes from `states`: each group's members, and the
names SQL receives for it."""

from __future__ import annotations

from batchcalls.domain.states import (
    ACTIVE_BATCH_STATUSES,
    DIALING_BATCH_STATUSES,
    FINAL_BATCH_STATUSES,
    FINAL_STATUSES,
    LIVE_STATUSES,
    PENDING_STATUSES,
    UNFINISHED_STATUSES,
    BatchStatus,
    CallStatus,
    values,
)


def test_sql_gets_each_group_as_plain_names_in_enum_order() -> None:
    assert values(LIVE_STATUSES) == ["dialing", "ringing", "in_progress"]
    assert values(PENDING_STATUSES) == ["queued", "scheduled"]
    assert values(UNFINISHED_STATUSES) == ["queued", "scheduled", "dialing", "ringing", "in_progress"]
    assert values(FINAL_STATUSES) == ["completed", "failed", "cancelled"]
    assert values(ACTIVE_BATCH_STATUSES) == ["scheduled", "queued", "running", "paused"]
    assert values(DIALING_BATCH_STATUSES) == ["queued", "running"]
    assert values(FINAL_BATCH_STATUSES) == ["completed", "failed", "cancelled"]
    assert all(type(name) is str for name in values(LIVE_STATUSES) + values(ACTIVE_BATCH_STATUSES))


def test_unfinished_calls_are_every_call_not_final() -> None:
    assert set(CallStatus) - FINAL_STATUSES == UNFINISHED_STATUSES


def test_active_and_final_batch_statuses_split_every_batch_status() -> None:
    assert set(BatchStatus) == ACTIVE_BATCH_STATUSES | FINAL_BATCH_STATUSES
    assert not ACTIVE_BATCH_STATUSES & FINAL_BATCH_STATUSES
    # A paused batch, and one scheduled for its start_at, is active but dials nothing.
    assert ACTIVE_BATCH_STATUSES - {BatchStatus.PAUSED, BatchStatus.SCHEDULED} == DIALING_BATCH_STATUSES


def test_a_row_status_as_read_from_postgres_is_found_in_its_group() -> None:
    assert "dialing" in LIVE_STATUSES and "queued" in PENDING_STATUSES and "paused" in ACTIVE_BATCH_STATUSES
    assert "completed" not in LIVE_STATUSES and "cancelled" not in ACTIVE_BATCH_STATUSES
