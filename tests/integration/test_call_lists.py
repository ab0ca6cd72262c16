"""Clean lists on the real stack (worker processes, Redis, Postgres, the simulator): `dedupe`
refuses a repeated number naming both calls (or dials both when false), `invalid_numbers: skip`
keeps the valid calls and records each invalid one failed with no attempt, through the JSON body
and the CSV upload (named by line, repeats found across groups written before). Waits on
conditions, never sleeps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests

from api import csv_upload
from tests.integration.test_control import call_ids, creates
from tests.integration.test_csv_upload import batch_count, upload
from tests.integration.test_pipeline import number
from tests.integration.test_suppressions import suppress
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

PREMIUM = "+449012345678"  # a valid number of a type the default destination rules block
NOT_VALID = "+1 555"


@pytest.fixture(scope="module")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        running = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("lists")),
            BATCHCALLS_SIM_RING_SECONDS="0.1",
            BATCHCALLS_SIM_CALL_SECONDS="0.2",
        )
        try:
            yield running
        finally:
            running.stop()


def post(stack: Stack, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(f"{stack.api_url}/v1/batches", json=body, headers=stack.headers(**headers), timeout=60)


def calls_to(*numbers: str) -> list[dict[str, Any]]:
    return [{"phone_number": n, "script": {"text": "Hi"}} for n in numbers]


def spaced(e164: str) -> str:
    """The same London number as a person types it: `+44 20 7946 0123`."""
    return f"{e164[:3]} {e164[3:5]} {e164[5:9]} {e164[9:]}"


def batch_events(stack: Stack, batch_id: str) -> list[tuple[str, dict[str, Any]]]:
    conn = psycopg2.connect(stack.env["DATABASE_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT type, payload FROM events WHERE batch_id = %s ORDER BY seq", (batch_id,))
            return [(kind, payload) for kind, payload in cur.fetchall()]
    finally:
        conn.close()


def results(stack: Stack, batch_id: str) -> dict[str, dict[str, Any]]:
    answer = requests.get(
        f"{stack.api_url}/v1/batches/{batch_id}/results",
        params={"format": "jsonl"},
        headers=stack.headers(),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return {row["id"]: row for row in map(json.loads, answer.text.splitlines())}


# --- dedupe --------------------------------------------------------------------------------------


def test_a_repeated_number_is_refused_naming_both_calls_and_nothing_is_stored(stack: Stack) -> None:
    first, second = number(10, 0), number(11, 0)
    before = batch_count(stack)
    answer = post(stack, {"calls": calls_to(first, second, number(12, 0), spaced(second), first)})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "duplicate_phone_number"
    assert error["details"] == {
        "calls[3].phone_number": [f"repeats calls[1].phone_number ({second})"],
        "calls[4].phone_number": [f"repeats calls[0].phone_number ({first})"],
    }
    assert '"dedupe": false' in error["message"]
    assert batch_count(stack) == before


def test_with_dedupe_false_a_repeated_number_is_dialed_twice(stack: Stack) -> None:
    repeated = number(20, 0)
    submitted = stack.submit({"calls": calls_to(repeated, number(21, 0), spaced(repeated)), "dedupe": False})
    final = stack.wait_finished(submitted["batch_id"])
    assert (final["status"], final["total_calls"], final["completed_calls"]) == ("completed", 3, 3)
    calls = stack.all_calls(submitted["batch_id"])
    twice = [c["id"] for c in calls if c["phone_number"] == repeated]
    assert len(twice) == 2
    created = [c["call_id"] for c in creates(stack, call_ids(stack, submitted["batch_id"]))]
    assert sorted(c for c in created if c in twice) == sorted(twice)


def test_a_bad_dedupe_or_invalid_numbers_value_is_a_422(stack: Stack) -> None:
    for field, value in (("dedupe", "no"), ("dedupe", 0), ("invalid_numbers", "ignore")):
        answer = post(stack, {"calls": calls_to(number(30, 0)), field: value})
        assert answer.status_code == 422, answer.text
        assert list(answer.json()["error"]["details"]) == [field]


# --- invalid_numbers: skip ------------------------------------------------------------------------


def test_skip_keeps_the_valid_calls_and_records_each_invalid_one_failed_with_no_attempt(stack: Stack) -> None:
    valid = [number(40 + i, 0) for i in range(3)]
    suppressed_premium = "+449012345679"
    suppress(stack, [suppressed_premium])  # a number skipped for its destination, suppressed too
    sent = {
        "calls": calls_to(valid[0], "not-a-number", valid[1], PREMIUM, NOT_VALID, suppressed_premium, valid[2]),
        "invalid_numbers": "skip",
    }
    answer = post(stack, sent, **{"Idempotency-Key": "lists-skip-1"})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert (accepted["total_calls"], accepted["failed_calls"], accepted["skipped_calls"]) == (7, 4, 3)
    skipped = [{k: v for k, v in s.items() if k != "call_id"} for s in accepted["skipped"]]
    assert skipped == [
        {
            "index": 1,
            "phone_number": "not-a-number",
            "field": "calls[1].phone_number",
            "message": "must be in international E.164 form: + and the country code, like +14155552671",
        },
        {
            "index": 3,
            "phone_number": PREMIUM,
            "field": "calls[3].phone_number",
            "message": skipped[1]["message"],
        },
        {
            "index": 4,
            "phone_number": NOT_VALID,
            "field": "calls[4].phone_number",
            "message": "is not a valid phone number",
        },
    ]
    assert "premium" in skipped[1]["message"].lower()
    batch_id = accepted["batch_id"]
    replayed = post(stack, sent, **{"Idempotency-Key": "lists-skip-1"})
    assert replayed.status_code == 202 and replayed.json()["skipped"] == accepted["skipped"]

    final = stack.wait_finished(batch_id)
    assert (final["status"], final["completed_calls"], final["failed_calls"]) == ("completed", 3, 4)
    calls = {c["id"]: c for c in stack.all_calls(batch_id)}
    ids = {s["index"]: s["call_id"] for s in accepted["skipped"]}
    expected = {1: "invalid_number", 3: "destination_not_allowed", 4: "invalid_number"}
    for index, outcome in expected.items():
        call = calls[ids[index]]
        assert (call["status"], call["outcome"], call["attempts"]) == ("failed", outcome, [])
        assert call["last_error"] == f"calls[{index}].phone_number: {skipped[[1, 3, 4].index(index)]['message']}"
    by_number = {c["phone_number"]: c for c in calls.values()}
    assert (by_number[suppressed_premium]["outcome"], by_number[suppressed_premium]["attempts"]) == ("suppressed", [])
    created = {c["call_id"] for c in creates(stack, set(calls))}
    assert created == {by_number[n]["id"] for n in valid}  # only the valid calls were dialed

    events = batch_events(stack, batch_id)
    failed_events = [payload for kind, payload in events if kind == "batch.call_failed"]
    assert failed_events == []  # ended at submit: the 202 reported them, as suppressed calls
    (completed,) = [payload for kind, payload in events if kind == "batch.completed"]
    assert (completed["data"]["completed_calls"], completed["data"]["failed_calls"]) == (3, 4)
    exported = results(stack, batch_id)
    for index, outcome in expected.items():
        row = exported[ids[index]]
        assert (row["status"], row["outcome"], row["attempts"], row["first_dialed_at"]) == ("failed", outcome, 0, None)
        assert row["last_error"] == calls[ids[index]]["last_error"]


def test_a_list_whose_every_call_would_be_skipped_is_refused_and_nothing_is_stored(stack: Stack) -> None:
    before = batch_count(stack)
    answer = post(stack, {"calls": calls_to(NOT_VALID, PREMIUM), "invalid_numbers": "skip"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_phone_number"
    assert answer.json()["error"]["details"] == {"calls[0].phone_number": ["is not a valid phone number"]}
    assert "at least one number must be valid" in answer.json()["error"]["message"]
    only_blocked = post(stack, {"calls": calls_to(PREMIUM), "invalid_numbers": "skip"})
    assert only_blocked.status_code == 422 and only_blocked.json()["error"]["code"] == "destination_not_allowed"
    assert batch_count(stack) == before


def test_skip_still_refuses_a_repeated_valid_number(stack: Stack) -> None:
    repeated = number(50, 0)
    answer = post(stack, {"calls": calls_to(NOT_VALID, repeated, NOT_VALID, repeated), "invalid_numbers": "skip"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["details"] == {
        "calls[3].phone_number": [f"repeats calls[1].phone_number ({repeated})"]
    }


# --- CSV ------------------------------------------------------------------------------------------


def test_a_csv_repeat_found_after_earlier_groups_were_written_leaves_nothing_stored(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_upload, "CHUNK_ROWS", 2)  # groups of two rows: lines 2-3, 4-5, 6-7
    rows = [number(60 + i, 0) for i in range(5)] + [spaced(number(61, 0))]
    csv_text = "phone_number,text\n" + "".join(f"{n},Hi\n" for n in rows)
    before = batch_count(stack)
    answer = upload(stack, csv_text)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "duplicate_phone_number"
    assert answer.json()["error"]["details"] == {"line 7, column phone_number": [f"repeats line 3 ({number(61, 0)})"]}
    assert batch_count(stack) == before
    kept = upload(stack, csv_text, {"dedupe": "false"})
    assert kept.status_code == 202, kept.text
    final = stack.wait_finished(kept.json()["batch_id"])
    assert (final["total_calls"], final["completed_calls"]) == (6, 6)
    bad = upload(stack, csv_text, {"dedupe": "maybe"})
    assert bad.status_code == 422 and list(bad.json()["error"]["details"]) == ["dedupe"]


def test_a_csv_with_skip_names_the_skipped_rows_by_line(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_upload, "CHUNK_ROWS", 2)
    csv_text = (
        "phone_number,text\n"
        f"{number(70, 0)},Hi\n"
        "not-a-number,Hi\n"
        "\n"
        f"{number(71, 0)},Hi\n"
        f"{PREMIUM},Hi\n"
        f"{number(72, 0)},Hi\n"
    )
    refused = upload(stack, csv_text)
    assert refused.status_code == 422  # "reject": each group of rows names its first kind of problem
    assert list(refused.json()["error"]["details"]) == ["line 3, column phone_number", "line 6, column phone_number"]
    answer = upload(stack, csv_text, {"invalid_numbers": "skip"})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert (accepted["total_calls"], accepted["skipped_calls"]) == (5, 2)
    assert [(s["index"], s["field"], s["phone_number"]) for s in accepted["skipped"]] == [
        (1, "line 3, column phone_number", "not-a-number"),
        (3, "line 6, column phone_number", PREMIUM),
    ]
    final = stack.wait_finished(accepted["batch_id"])
    assert (final["status"], final["completed_calls"], final["failed_calls"]) == ("completed", 3, 2)
    calls = {c["id"]: c for c in stack.all_calls(accepted["batch_id"])}
    line_3 = calls[accepted["skipped"][0]["call_id"]]
    assert (line_3["outcome"], line_3["attempts"]) == ("invalid_number", [])
    assert line_3["last_error"].startswith("line 3, column phone_number: ")


def test_a_multipart_csv_takes_dedupe_and_invalid_numbers_from_its_options(stack: Stack) -> None:
    repeated = number(80, 0)
    csv_text = f"phone_number,text\n{repeated},Hi\n{NOT_VALID},Hi\n{repeated},Hi\n"
    answer = requests.post(
        f"{stack.api_url}/v1/batches",
        files={"file": ("calls.csv", csv_text.encode(), "text/csv")},
        data={"options": json.dumps({"dedupe": False, "invalid_numbers": "skip"})},
        headers=stack.headers(),
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    assert (answer.json()["total_calls"], answer.json()["skipped_calls"]) == (3, 1)
    final = stack.wait_finished(answer.json()["batch_id"])
    assert (final["completed_calls"], final["failed_calls"]) == (2, 1)
    every_skipped = upload(stack, f"phone_number,text\n{NOT_VALID},Hi\n", {"invalid_numbers": "skip"})
    assert every_skipped.status_code == 422, every_skipped.text
    assert every_skipped.json()["error"]["details"] == {"line 2, column phone_number": ["is not a valid phone number"]}
