"""A call's own `metadata` and `variables` (issue 17) on the real stack: metadata echoed in the
status body, `GET .../calls` and the delivered call events; variables filled into the script
that is stored and handed to the provider; a bad call refused with a 422 naming its field, and
nothing stored."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest

from batchcalls.adapters.telephony import ncco
from tests.integration.conftest import Api
from tests.integration.test_pipeline import number
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

FIRST = 870  # numbers of their own, so no other test's calls are mistaken for these


def _stored_calls(stack: Stack, batch_id: str) -> list[tuple[Any, ...]]:
    """(phone number, script, metadata, variables) of each stored call of the batch, in order."""
    conn = psycopg2.connect(stack.env["DATABASE_URL"])
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT phone_number, script, metadata, variables FROM calls WHERE batch_id = %s ORDER BY seq",
                (batch_id,),
            )
            return list(cur.fetchall())
    finally:
        conn.close()


def test_call_metadata_is_echoed_in_the_status_body_the_calls_and_the_delivered_events(stack: Stack) -> None:
    metadata = [
        {"crm_id": "c-1", "tags": ["vip"], "nested": {"n": 1, "ok": True}},
        {"crm_id": "c-2", "note": "Zoë ☎"},
        None,
    ]
    calls: list[dict[str, Any]] = [
        {"phone_number": number(FIRST, 0), "script": {"text": "Hello"}, "metadata": metadata[0]},
        {"phone_number": number(FIRST + 1, 1), "script": {"text": "Hello"}, "metadata": metadata[1]},  # busy
        {"phone_number": number(FIRST + 2, 0), "script": {"text": "Hello"}},
    ]
    accepted = stack.submit({"calls": calls, "concurrency": 3, "callback_url": stack.receiver.url})
    batch_id = accepted["batch_id"]
    assert [c["metadata"] for c in accepted["calls"]] == metadata

    stack.wait_finished(batch_id, timeout=60)
    by_number = {c["phone_number"]: c for c in stack.all_calls(batch_id)}
    assert [by_number[c["phone_number"]]["metadata"] for c in calls] == metadata
    assert [by_number[c["phone_number"]]["status"] for c in calls] == ["completed", "failed", "completed"]
    assert [c["metadata"] for c in stack.status(batch_id)["calls"]] == metadata

    events = stack.receiver.wait_for(batch_id, {"batch.completed", "batch.failed"}, timeout=60)
    call_events = {e["data"]["phone_number"]: e for e in events if e["type"].startswith("batch.call_")}
    assert {n: e["type"] for n, e in call_events.items()} == {
        calls[0]["phone_number"]: "batch.call_completed",
        calls[1]["phone_number"]: "batch.call_failed",
        calls[2]["phone_number"]: "batch.call_completed",
    }
    assert [call_events[c["phone_number"]]["data"]["metadata"] for c in calls] == metadata


def test_variables_fill_the_script_that_is_stored_and_sent_to_the_provider(stack: Stack) -> None:
    script = {
        "type": "reminder",
        "steps": [
            {"text": "Hello {{ first_name | there }}, this is {{company}}."},
            {"text": "You owe {{amount}}. {{__class__|}}{% if x %}{{7*7}}"},
        ],
    }
    calls: list[dict[str, Any]] = [
        {
            "phone_number": number(FIRST + 3, 0),
            "script": script,
            "variables": {"first_name": "Ada {{company}}", "company": "Acme", "amount": 12.5},
            "metadata": {"crm_id": "c-3"},
        },
        {"phone_number": number(FIRST + 4, 0), "script": script, "variables": {"company": "Acme", "amount": 3}},
    ]
    batch_id = stack.submit({"calls": calls, "concurrency": 2})["batch_id"]
    spoken = [
        ["Hello Ada {{company}}, this is Acme.", "You owe 12.5. {% if x %}{{7*7}}"],
        ["Hello there, this is Acme.", "You owe 3. {% if x %}{{7*7}}"],
    ]
    stored = _stored_calls(stack, batch_id)
    assert [[step["text"] for step in row[1]["steps"]] for row in stored] == spoken
    assert [(row[2], row[3]) for row in stored] == [
        ({"crm_id": "c-3"}, calls[0]["variables"]),
        (None, calls[1]["variables"]),
    ]
    # What the provider is given: the NCCO of the stored script speaks the filled texts.
    for row, texts in zip(stored, spoken, strict=True):
        actions = ncco.render(row[1], None, input_url=lambda i: f"/input/{i}")
        assert [a["text"] for a in actions] == texts

    final = stack.wait_finished(batch_id, timeout=60)
    assert final["completed_calls"] == 2
    assert {c["script_type"] for c in stack.all_calls(batch_id)} == {"reminder"}


def _hello(i: int, **extra: Any) -> dict[str, Any]:
    return {"phone_number": f"+4420794600{i:02d}", "script": {"text": "Hello"}, **extra}


@pytest.mark.parametrize(
    ("bad_call", "code", "path", "words"),
    [
        (
            {"script": {"steps": [{"text": "Hi"}, {"text": "Dear {{first_name}}"}]}, "variables": {"other": "x"}},
            "invalid_script",
            "calls[1].script.steps[1].text",
            ["{{first_name}}", "'first_name'"],
        ),
        (
            {"script": {"text": "{{__class__}}"}},
            "invalid_script",
            "calls[1].script.text",
            ["'__class__'"],
        ),
        (
            {"script": {"text": "{{a}}{{b}}"}, "variables": {"a": "x" * 1000, "b": "y" * 612}},
            "invalid_script",
            "calls[1].script.text",
            ["at most 1500 characters (it has 1612 after its variables were filled in)"],
        ),
        ({"variables": {"first name": "Ada"}}, "invalid_request", "calls[1].variables.first name", ["variable name"]),
        ({"variables": {"x": {"a": 1}}}, "invalid_request", "calls[1].variables.x", ["string, a number or a boolean"]),
        ({"metadata": ["not", "an", "object"]}, "invalid_request", "calls[1].metadata", ["mapping"]),
        ({"metadata": {"big": "x" * 17_000}}, "invalid_request", "calls[1].metadata", ["bytes as JSON"]),
    ],
)
def test_a_bad_call_is_a_422_naming_its_field_and_nothing_is_stored(
    api: Api, bad_call: dict[str, Any], code: str, path: str, words: list[str]
) -> None:
    response = api.post({"calls": [_hello(0, metadata={"crm_id": "ok"}), {**_hello(1), **bad_call}]})
    assert response.status_code == 422, response.text
    error = response.get_json()["error"]
    assert error["code"] == code
    assert list(error["details"]) == [path]
    assert all(word in error["details"][path][0] for word in words), error["details"]
    assert path in error["message"]
    assert api.stored() == (0, 0)


def test_the_api_shows_call_metadata_and_a_call_without_it_as_null(api: Api) -> None:
    response = api.post({"calls": [_hello(0, metadata={"crm_id": "c-9", "n": [1, 2]}), _hello(1)]})
    assert response.status_code == 202, response.text
    accepted = response.get_json()
    assert [c["metadata"] for c in accepted["calls"]] == [{"crm_id": "c-9", "n": [1, 2]}, None]
    page = api.get(f"/v1/batches/{accepted['batch_id']}/calls").get_json()
    assert [c["metadata"] for c in page["calls"]] == [{"crm_id": "c-9", "n": [1, 2]}, None]
