"""Suppression lists on the real stack (worker processes, Redis, Postgres, the simulator): a
suppressed number is never created, whether suppressed before its batch was submitted or while
it runs, against the simulator's log of creates; the API's checks, tenant isolation and the CLI.
Assertions wait on conditions with deadlines, never on durations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from click.testing import CliRunner

from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.tenants import create_key
from batchcalls.ops.cli import main as cli
from tests.integration.test_control import body, call_ids, creates, event_types, wait_for
from tests.integration.test_pipeline import number
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        running = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("suppressions")),
            BATCHCALLS_SIM_RING_SECONDS="0.1",
            BATCHCALLS_SIM_CALL_SECONDS="0.8",
        )
        try:
            yield running
        finally:
            running.stop()


def api(stack: Stack, method: str, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key or stack.api_key}"}
    return requests.request(method, f"{stack.api_url}{path}", headers=headers, timeout=60, **kwargs)


def suppress(stack: Stack, numbers: list[str], key: str | None = None) -> dict[str, Any]:
    response = api(stack, "POST", "/v1/suppressions", key, json={"phone_numbers": numbers, "reason": "test"})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def by_number(stack: Stack, batch_id: str) -> dict[str, dict[str, Any]]:
    return {c["phone_number"]: c for c in stack.all_calls(batch_id)}


def test_a_number_suppressed_before_submit_is_never_created(stack: Stack) -> None:
    sent = body(6, 2, 100)
    numbers = [c["phone_number"] for c in sent["calls"]]
    suppress(stack, [numbers[1], numbers[4]])
    submitted = stack.submit(sent)
    assert submitted["failed_calls"] == 2 and submitted["total_calls"] == 6  # final in the submit's answer
    batch_id = submitted["batch_id"]
    final = stack.wait_finished(batch_id)
    assert final["status"] == "completed" and (final["completed_calls"], final["failed_calls"]) == (4, 2)
    calls = by_number(stack, batch_id)
    for n in (numbers[1], numbers[4]):
        assert (calls[n]["status"], calls[n]["outcome"], calls[n]["attempts"]) == ("failed", "suppressed", [])
    created = {c["call_id"] for c in creates(stack, call_ids(stack, batch_id))}
    assert created == {calls[n]["id"] for n in numbers if n not in (numbers[1], numbers[4])}


def test_a_batch_of_suppressed_numbers_only_finishes_at_once_with_its_event(stack: Stack) -> None:
    sent = body(3, 1, 200)
    suppress(stack, [c["phone_number"] for c in sent["calls"]])
    submitted = stack.submit(sent)
    assert submitted["status"] == "failed" and submitted["finished_at"] is not None
    assert submitted["failed_calls"] == 3 and submitted["pending"] == 0
    assert event_types(stack, submitted["batch_id"]) == ["batch.failed"]
    assert creates(stack, call_ids(stack, submitted["batch_id"])) == []


def test_a_number_suppressed_while_its_batch_runs_is_not_created_afterwards(stack: Stack) -> None:
    sent = body(12, 1, 300)  # one at a time: the later calls wait while the first are dialed
    numbers = [c["phone_number"] for c in sent["calls"]]
    later = numbers[8:]
    batch_id = stack.submit(sent)["batch_id"]
    ids = call_ids(stack, batch_id)
    wait_for(lambda: len(creates(stack, ids)) >= 1, "the first create")
    suppress(stack, later)
    final = stack.wait_finished(batch_id, timeout=90)
    calls = by_number(stack, batch_id)
    created = {c["call_id"] for c in creates(stack, ids)}
    assert not created & {calls[n]["id"] for n in later}, "a number suppressed mid-run was created"
    for n in later:
        assert (calls[n]["status"], calls[n]["outcome"], calls[n]["attempts"]) == ("failed", "suppressed", [])
    assert final["completed_calls"] + final["failed_calls"] == 12 and final["failed_calls"] == len(later)
    types = event_types(stack, batch_id)
    # Each call ended at its dial has its call event; the batch ends once.
    assert types.count("batch.call_failed") == len(later) and types.count("batch.completed") == 1


def test_the_api_checks_normalises_pages_and_removes(stack: Stack) -> None:
    bad = api(stack, "POST", "/v1/suppressions", json={"phone_numbers": [number(400, 0), "+1 555", "4155552671"]})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_phone_number"
    assert set(bad.json()["error"]["details"]) == {"phone_numbers[1]", "phone_numbers[2]"}
    lookup = api(stack, "GET", "/v1/suppressions", params={"phone_number": number(400, 0)}).json()
    assert lookup["suppressions"] == []  # nothing stored from a refused request
    for wrong in ({"phone_numbers": []}, {"phone_numbers": "+442079460000"}, {"numbers": ["+442079460000"]},
                  {"phone_numbers": [number(401, 0)], "reason": 5}):  # fmt: skip
        assert api(stack, "POST", "/v1/suppressions", json=wrong).status_code == 422, wrong
    added = suppress(stack, [number(410 + i, 0) for i in range(5)] + [number(410, 0)])
    assert (added["added"], added["already_suppressed"]) == (5, 0)
    assert suppress(stack, [number(410, 0)])["already_suppressed"] == 1
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api(stack, "GET", "/v1/suppressions", params=params).json()
        pages.append(page["suppressions"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    listed = [s["phone_number"] for p in pages for s in p]
    assert all(len(p) <= 2 for p in pages) and listed == sorted(listed) and len(listed) == len(set(listed))
    assert {number(410 + i, 0) for i in range(5)} <= set(listed)
    assert api(stack, "GET", "/v1/suppressions", params={"cursor": "nonsense!"}).status_code == 422
    assert api(stack, "GET", "/v1/suppressions", params={"phone_number": "12"}).status_code == 422
    found = api(stack, "GET", "/v1/suppressions", params={"phone_number": number(411, 0)}).json()["suppressions"]
    assert [(s["phone_number"], s["reason"]) for s in found] == [(number(411, 0), "test")]
    assert api(stack, "DELETE", f"/v1/suppressions/{number(411, 0)}").status_code == 204
    assert api(stack, "DELETE", f"/v1/suppressions/{number(411, 0)}").status_code == 404
    assert api(stack, "DELETE", "/v1/suppressions/not-a-number").status_code == 422


def test_numbers_are_normalised_like_calls(stack: Stack) -> None:
    raw = "+44 (20) 7944-2100"
    assert suppress(stack, [raw])["phone_numbers"] == ["+442079442100"]
    assert api(stack, "DELETE", "/v1/suppressions/%2B44%2020%207944%202100").status_code == 204


def test_another_tenant_neither_sees_nor_is_bound_by_the_list(stack: Stack) -> None:
    mine = number(500, 0)
    suppress(stack, [mine])
    _, other = create_key(Database(stack.env["DATABASE_URL"]), "other-suppressions")
    seen = api(stack, "GET", "/v1/suppressions", key=other, params={"phone_number": mine}).json()
    assert seen["suppressions"] == []
    assert api(stack, "DELETE", f"/v1/suppressions/{mine}", key=other).status_code == 404
    response = api(stack, "POST", "/v1/batches", key=other, json=body(1, 1, 500))
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    wait_for(lambda: api(stack, "GET", f"/v1/batches/{batch_id}", key=other).json()["finished_at"], "the other's batch")
    assert api(stack, "GET", f"/v1/batches/{batch_id}", key=other).json()["completed_calls"] == 1
    assert api(stack, "GET", "/v1/suppressions", params={"phone_number": mine}).json()["suppressions"] != []


def test_the_cli_adds_lists_imports_and_removes(stack: Stack, tmp_path: Path) -> None:
    env = {"BATCHCALLS_API_URL": stack.api_url, "BATCHCALLS_API_KEY": stack.api_key}
    runner = CliRunner()
    added = runner.invoke(cli, ["suppressions", "add", number(600, 0), number(601, 0), "--reason", "cli"], env=env)
    assert added.exit_code == 0 and "added 2" in added.output, added.output
    listed = runner.invoke(cli, ["suppressions", "list", "--phone-number", number(600, 0)], env=env)
    assert listed.exit_code == 0 and number(600, 0) in listed.output and "cli" in listed.output
    csv_file = tmp_path / "dnc.csv"
    csv_file.write_text(f"name,phone_number\na,{number(602, 0)}\nb,{number(601, 0)}\n")
    imported = runner.invoke(cli, ["suppressions", "import", str(csv_file)], env=env)
    assert imported.exit_code == 0 and "added 1, already suppressed 1" in imported.output, imported.output
    bad_file = tmp_path / "bad.csv"
    bad_file.write_text(f"{number(603, 0)}\nnot-a-number\n")
    refused = runner.invoke(cli, ["suppressions", "import", str(bad_file)], env=env)
    assert refused.exit_code != 0 and "line 2" in refused.output
    assert runner.invoke(cli, ["suppressions", "list", "--phone-number", number(603, 0)], env=env).output == ""
    removed = runner.invoke(cli, ["suppressions", "remove", number(600, 0)], env=env)
    assert removed.exit_code == 0
    again = runner.invoke(cli, ["suppressions", "remove", number(600, 0)], env=env)
    assert again.exit_code != 0 and "not_found" in again.output
    everything = runner.invoke(cli, ["suppressions", "list", "--json"], env=env)
    assert number(602, 0) in everything.output and number(600, 0) not in everything.output


# --- opt-out during a call -------------------------------------------------------------------

OPT_OUT_BY_KEY = {
    "steps": [
        {"text": "Hello, this is Acme. Press 1 to hear more, or 9 never to be called again."},
        {"type": "input", "dtmf": {"max_digits": 1}, "name": "choice", "opt_out": {"digits": "9"}},
        {"text": "Thank you."},
    ]
}
OPT_OUT_BY_VOICE = {
    "steps": [
        {"type": "input", "speech": True, "name": "answer", "opt_out": {"phrases": ["stop calling", "remove me"]}},
    ]
}


def call_events(stack: Stack, batch_id: str) -> list[dict[str, Any]]:
    conn = psycopg2.connect(stack.env["DATABASE_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT type, payload FROM events WHERE batch_id = %s ORDER BY seq", (batch_id,))
            return [{"type": t, **p} for t, p in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.parametrize(("script", "given"), [(OPT_OUT_BY_KEY, "digits"), (OPT_OUT_BY_VOICE, "speech")])
def test_a_callee_who_opts_out_is_suppressed_at_once_and_no_later_batch_dials_the_number(
    stack: Stack, script: dict[str, Any], given: str
) -> None:
    base = 400 if given == "digits" else 420
    # The simulator's callee of a number ending in 7 gives the script's opt-out; one ending in 0
    # gives nothing and hears the script to its end.
    opting, staying = number(base, 7), number(base + 1, 0)
    sent = {"calls": [{"phone_number": p, "script": script} for p in (opting, staying)], "concurrency": 2}
    batch_id = stack.submit(sent)["batch_id"]
    final = stack.wait_finished(batch_id)
    assert (final["status"], final["completed_calls"], final["failed_calls"]) == ("completed", 1, 1)
    calls = by_number(stack, batch_id)
    opted = calls[opting]
    assert (opted["status"], opted["outcome"]) == ("failed", "opted_out")
    assert len(opted["attempts"]) == 1  # never retried
    (response,) = wait_for(lambda: by_number(stack, batch_id)[opting]["responses"], "the opt-out answer stored")
    if given == "digits":
        assert (response["step"], response["name"], response["digits"]) == (1, "choice", "9")
    else:
        assert (response["step"], response["name"]) == (0, "answer")
        assert response["speech"][0]["text"] == "stop calling"
    assert (calls[staying]["status"], calls[staying]["outcome"], calls[staying]["responses"]) == (
        "completed",
        "completed",
        [],
    )
    # On the tenant's suppression list, with the call that put it there.
    listed = wait_for(
        lambda: api(stack, "GET", "/v1/suppressions", params={"phone_number": opting}).json()["suppressions"],
        "the number suppressed",
    )
    assert listed[0]["phone_number"] == opting and opted["id"] in listed[0]["reason"]
    failed = [e for e in call_events(stack, batch_id) if e["type"] == "batch.call_failed"]
    assert [(e["data"]["phone_number"], e["data"]["outcome"]) for e in failed] == [(opting, "opted_out")]

    # A later batch of the tenant: the number ends suppressed, never created.
    later = stack.submit({"calls": [{"phone_number": opting, "script": script}]})
    assert later["status"] == "failed" and later["failed_calls"] == 1
    (again,) = stack.all_calls(later["batch_id"])
    assert (again["outcome"], again["attempts"]) == ("suppressed", [])
    assert not creates(stack, {again["id"]})


def test_an_opt_out_needs_the_capture_it_listens_on(stack: Stack) -> None:
    bad = {
        "steps": [
            {"type": "input", "speech": True, "opt_out": {"digits": "9"}},
            {"type": "input", "dtmf": {"max_digits": 1}, "opt_out": {"digits": "99", "phrases": ["stop"]}},
            {"type": "input", "dtmf": True, "opt_out": {"digits": "x", "unknown": 1}},
        ]
    }
    response = api(stack, "POST", "/v1/batches", json={"calls": [{"phone_number": number(440, 0), "script": bad}]})
    assert response.status_code == 422, response.text
    fields = response.json()["error"]["details"]
    prefix = "calls[0].script.steps"
    assert fields[f"{prefix}[0].opt_out.digits"] == ["need the step to capture dtmf"]
    assert fields[f"{prefix}[1].opt_out.digits"] == ["must be at most the step's dtmf.max_digits (1) keys long"]
    assert fields[f"{prefix}[1].opt_out.phrases"] == ["need the step to capture speech"]
    assert fields[f"{prefix}[2].opt_out.digits"] == ["must be 1 to 20 of the keys 0-9, * and #"]
    assert fields[f"{prefix}[2].opt_out"] == ["unknown is not an option; known: digits, phrases"]
