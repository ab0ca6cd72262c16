"""Voicemail on the real stack (worker processes, Redis, Postgres, the simulator): a machine
number's call with `leave_message` leaves its message (the simulator's log of voicemails) and
ends `machine` with `voicemail_left` on its attempt; `hangup` and the default leave nothing; a
call's own voicemail replaces its batch's; retries of machines stay with `retry_on`; bad
voicemails are 422s naming their paths. Assertions wait on conditions with deadlines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from batchcalls.domain.scripts import MAX_TEXT_CHARS
from tests.integration.test_pipeline import number
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

MESSAGE = "Hello, this is Acme about your order. Please call us back."


@pytest.fixture(scope="module")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        running = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("voicemail")),
            BATCHCALLS_SIM_RING_SECONDS="0.1",
            BATCHCALLS_SIM_CALL_SECONDS="0.5",
        )
        try:
            yield running
        finally:
            running.stop()


def voicemails(stack: Stack) -> list[dict[str, Any]]:
    """The simulator's log of voicemails left (beside its log of creates)."""
    path = Path(str(stack.sim_log) + ".voicemails")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_number(stack: Stack, batch_id: str) -> dict[str, dict[str, Any]]:
    return {c["phone_number"]: c for c in stack.all_calls(batch_id)}


def left(call: dict[str, Any]) -> list[tuple[str | None, bool]]:
    return [(a["outcome"], a["voicemail_left"]) for a in call["attempts"]]


def test_a_machine_with_leave_message_gets_the_message_and_ends_machine(stack: Stack) -> None:
    own_text = "A message of this call's own."
    body = {
        "calls": [
            {"phone_number": number(10, 5), "script": {"text": "Hi"}},
            {"phone_number": number(11, 5), "script": {"text": "Hi"}, "voicemail": {"action": "hangup"}},
            {
                "phone_number": number(12, 5),
                "script": {"text": "Hi"},
                "voicemail": {"action": "leave_message", "text": own_text},
            },
            {"phone_number": number(13, 0), "script": {"text": "Hi"}},
        ],
        "voicemail": {"action": "leave_message", "text": MESSAGE},
        # Machines are retried because retry_on says so, message or not.
        "retry_config": {"max_attempts": 2, "delay": 0.2, "retry_on": ["machine"]},
    }
    batch_id = str(stack.submit(body)["batch_id"])
    final = stack.wait_finished(batch_id, timeout=60)
    assert (final["completed_calls"], final["failed_calls"]) == (1, 3)
    calls = by_number(stack, batch_id)
    batch_default, own_hangup, own_message, person = (
        calls[number(i, d)] for i, d in ((10, 5), (11, 5), (12, 5), (13, 0))
    )

    assert batch_default["outcome"] == "machine" and batch_default["status"] == "failed"
    assert left(batch_default) == [("machine", True), ("machine", True)]
    assert left(own_message) == [("machine", True), ("machine", True)]
    assert left(own_hangup) == [("machine", False), ("machine", False)]
    assert person["outcome"] == "completed" and left(person) == [("completed", False)]

    logged = [(v["call_id"], v["attempt"], v["text"]) for v in voicemails(stack)]
    assert sorted(x for x in logged if x[0] in {c["id"] for c in calls.values()}) == sorted(
        [(batch_default["id"], n, MESSAGE) for n in (1, 2)] + [(own_message["id"], n, own_text) for n in (1, 2)]
    )
    for entry in voicemails(stack):
        if entry["call_id"] == batch_default["id"]:
            attempt = batch_default["attempts"][entry["attempt"] - 1]
            assert entry["uuid"] == attempt["provider_call_id"]
    # The results export says which calls left a message.
    exported = requests.get(
        f"{stack.api_url}/v1/batches/{batch_id}/results", headers=stack.headers(), timeout=60
    ).text.splitlines()
    shown = {row["phone_number"]: row["voicemail_left"] for row in map(json.loads, exported)}
    assert shown == {number(10, 5): True, number(11, 5): False, number(12, 5): True, number(13, 0): False}


def test_without_a_voicemail_a_machine_is_hung_up_on_as_before(stack: Stack) -> None:
    batch_id = str(stack.submit({"calls": [{"phone_number": number(20, 5), "script": {"text": "Hi"}}]})["batch_id"])
    final = stack.wait_finished(batch_id, timeout=60)
    assert final["status"] == "failed"
    (call,) = stack.all_calls(batch_id)
    assert left(call) == [("machine", False)]
    assert call["id"] not in {v["call_id"] for v in voicemails(stack)}


def test_a_calls_variables_are_filled_into_the_message_it_leaves(stack: Stack) -> None:
    body = {
        "calls": [
            {"phone_number": number(40, 5), "script": {"text": "Hi"}, "variables": {"name": "Ada"}},
            {"phone_number": number(41, 5), "script": {"text": "Hi"}},
        ],
        "voicemail": {"action": "leave_message", "text": "Hello {{name|there}}, {{__class__|}}{% x %}."},
    }
    batch_id = str(stack.submit(body)["batch_id"])
    stack.wait_finished(batch_id, timeout=60)
    calls = by_number(stack, batch_id)
    texts = {v["call_id"]: v["text"] for v in voicemails(stack)}
    assert texts[calls[number(40, 5)]["id"]] == "Hello Ada, {% x %}."
    assert texts[calls[number(41, 5)]["id"]] == "Hello there, {% x %}."
    missing = {
        "calls": [{"phone_number": number(42, 5), "script": {"text": "Hi"}}],
        "voicemail": {"action": "leave_message", "text": "Hi {{name}}"},
    }
    response = requests.post(f"{stack.api_url}/v1/batches", json=missing, headers=stack.headers(), timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_script"
    assert "'name'" in response.json()["error"]["details"]["calls[0].voicemail.text"][0]


@pytest.mark.parametrize(
    ("voicemail", "path", "code"),
    [
        ("leave", "voicemail", "invalid_request"),
        ({"action": "shout"}, "voicemail.action", "invalid_request"),
        ({"action": "hangup", "text": "Hi"}, "voicemail.text", "invalid_request"),
        ({"action": "leave_message", "text": "Hi", "loud": True}, "voicemail.loud", "invalid_request"),
        ({"action": "leave_message"}, "voicemail.text", "invalid_script"),
        ({"action": "leave_message", "text": "  "}, "voicemail.text", "invalid_script"),
        ({"action": "leave_message", "text": "x" * (MAX_TEXT_CHARS + 1)}, "voicemail.text", "invalid_script"),
    ],
)
def test_a_bad_voicemail_is_a_422_naming_its_path(stack: Stack, voicemail: Any, path: str, code: str) -> None:
    for body, named in (
        ({"calls": [{"phone_number": number(30, 0), "script": {"text": "Hi"}}], "voicemail": voicemail}, path),
        (
            {"calls": [{"phone_number": number(30, 0), "script": {"text": "Hi"}, "voicemail": voicemail}]},
            f"calls[0].{path}",
        ),
    ):
        response = requests.post(f"{stack.api_url}/v1/batches", json=body, headers=stack.headers(), timeout=30)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == code and named in error["details"], error
