"""The results export on the real stack (worker processes, Redis, Postgres, the simulator): both
formats give one row per call matching `GET .../calls` (status, outcome, attempts, times,
responses); another tenant's batch is a 404; formula-like cells are escaped in CSV; the CLI
writes the CSV to stdout."""

from __future__ import annotations

import csv
import io
import json
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
from tests.integration.test_control import wait_for
from tests.integration.test_pipeline import number
from tests.integration.test_suppressions import OPT_OUT_BY_KEY
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        running = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("results")),
            BATCHCALLS_SIM_RING_SECONDS="0.1",
            BATCHCALLS_SIM_CALL_SECONDS="0.8",
        )
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module")
def finished(stack: Stack) -> dict[str, Any]:
    """A finished batch: a call completed, one opted out by key (a response), one busy then
    completed on its retry (two attempts), one busy twice, and a call with formula-like data."""
    calls = [
        {"phone_number": number(700, 0), "script": OPT_OUT_BY_KEY, "metadata": {"crm_id": "A-1"}},
        {"phone_number": number(701, 7), "script": OPT_OUT_BY_KEY, "metadata": {"crm_id": "A-2"}},
        {"phone_number": number(702, 4), "script": {"text": "Hi {{name}}"}, "variables": {"name": "Ann"}},
        {"phone_number": number(703, 2), "script": {"text": "Hi"}, "metadata": {"note": "=HYPERLINK(1)"}},
        {"phone_number": number(704, 0), "script": {"text": "Hi"}, "variables": {"name": "@SUM(A1)"}},
    ]
    sent = {"calls": calls, "concurrency": 5, "retry_config": {"max_attempts": 2, "delay": 0}}
    batch_id = stack.submit(sent)["batch_id"]
    stack.wait_finished(batch_id, timeout=90)
    # The opt-out's answer may be stored just after the call's end.
    wait_for(lambda: _by_number(stack.all_calls(batch_id))[number(701, 7)]["responses"], "the opt-out answer stored")
    return {"batch_id": batch_id, "calls": _by_number(stack.all_calls(batch_id))}


def _by_number(calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["phone_number"]: c for c in calls}


def results(stack: Stack, batch_id: str, key: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key or stack.api_key}", **kwargs.pop("headers", {})}
    return requests.get(
        f"{stack.api_url}/v1/batches/{batch_id}/results", headers=headers, timeout=60, stream=True, **kwargs
    )


def _expected(call: dict[str, Any]) -> dict[str, Any]:
    """What the export must say of `call`, from `GET .../calls`."""
    attempts = call["attempts"]
    answered = [a for a in attempts if a["answered_at"] is not None]
    ended = [a["ended_at"] for a in attempts if a["ended_at"] is not None]
    return {
        "id": call["id"],
        "status": call["status"],
        "outcome": call["outcome"],
        "attempts": len(attempts),
        "last_error": call["last_error"],
        "first_dialed_at": min((a["dialed_at"] for a in attempts), default=None),
        "answered_at": answered[-1]["answered_at"] if answered else None,
        "ended_at": max(ended, default=None),
        "talk_time": answered[-1]["duration"] if answered else None,
        "metadata": call["metadata"],
        "responses": call["responses"],
    }


def test_jsonl_has_one_line_per_call_matching_the_calls_route(stack: Stack, finished: dict[str, Any]) -> None:
    response = results(stack, finished["batch_id"])  # JSONL by default
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in response.text.splitlines()]
    calls = finished["calls"]
    assert [r["phone_number"] for r in rows] == list(calls)  # the batch's order
    for row in rows:
        call = calls[row["phone_number"]]
        assert {k: row[k] for k in _expected(call)} == _expected(call), row
        assert row["voicemail_left"] is False
    opted = _by_number(rows)[number(701, 7)]
    assert (opted["outcome"], opted["responses"][0]["digits"]) == ("opted_out", "9")
    retried = _by_number(rows)[number(702, 4)]
    assert (retried["attempts"], retried["outcome"], retried["variables"]) == (2, "completed", {"name": "Ann"})
    assert _by_number(rows)[number(703, 2)]["attempts"] == 2  # busy twice
    assert results(stack, finished["batch_id"], headers={"Accept": "application/x-ndjson"}).text == response.text


def test_csv_has_one_row_per_call_matching_the_calls_route(stack: Stack, finished: dict[str, Any]) -> None:
    by_query = results(stack, finished["batch_id"], params={"format": "csv"})
    by_accept = results(stack, finished["batch_id"], headers={"Accept": "text/csv"})
    assert by_query.status_code == 200 and by_query.headers["Content-Type"].startswith("text/csv")
    assert by_accept.text == by_query.text
    rows = list(csv.DictReader(io.StringIO(by_query.text)))
    assert "response.choice" in rows[0]  # the first call's named input step
    calls = finished["calls"]
    assert [r["phone_number"] for r in rows] == list(calls)
    for row in rows:
        expected = _expected(calls[row["phone_number"]])
        for key in ("id", "status", "outcome", "first_dialed_at", "answered_at", "ended_at"):
            assert row[key] == (expected[key] or ""), (key, row)
        assert int(row["attempts"]) == expected["attempts"]
        talk = expected["talk_time"]
        assert (float(row["talk_time"]) if row["talk_time"] else None) == talk
        assert json.loads(row["responses"]) == expected["responses"]
        assert row["voicemail_left"] == "false"
    by_phone = {r["phone_number"]: r for r in rows}
    assert by_phone[number(701, 7)]["response.choice"] == "9"
    assert by_phone[number(700, 0)]["response.choice"] == ""
    assert json.loads(by_phone[number(700, 0)]["metadata"]) == {"crm_id": "A-1"}


def test_csv_cells_a_spreadsheet_would_run_are_escaped(stack: Stack, finished: dict[str, Any]) -> None:
    # A provider's error text is free text: as one starting with "=" and holding a comma and quotes.
    conn = psycopg2.connect(stack.env["DATABASE_URL"])
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE calls SET last_error = %s WHERE id = %s",
                ('=HYPERLINK("http://x.example", "y"),\nz', finished["calls"][number(703, 2)]["id"]),
            )
    finally:
        conn.close()
    rows = {
        r["phone_number"]: r
        for r in csv.DictReader(io.StringIO(results(stack, finished["batch_id"], params={"format": "csv"}).text))
    }
    # A phone number is a plain number: kept as it is (a spreadsheet reads it as that number).
    assert number(703, 2) in rows
    # JSON cells start with { and are safe; a formula inside one is inert text.
    assert json.loads(rows[number(703, 2)]["metadata"]) == {"note": "=HYPERLINK(1)"}
    assert json.loads(rows[number(704, 0)]["variables"]) == {"name": "@SUM(A1)"}
    assert rows[number(703, 2)]["last_error"] == '\'=HYPERLINK("http://x.example", "y"),\nz'
    assert all(not cell.startswith(("=", "@")) for row in rows.values() for cell in row.values())
    # JSONL keeps the text as it is: a JSON string is not a spreadsheet cell.
    lines = [json.loads(line) for line in results(stack, finished["batch_id"]).text.splitlines()]
    assert _by_number(lines)[number(703, 2)]["last_error"].startswith("=HYPERLINK")


def test_another_tenants_batch_and_a_bad_format_are_refused(stack: Stack, finished: dict[str, Any]) -> None:
    _, other = create_key(Database(stack.env["DATABASE_URL"]), "other-results")
    for fmt in ("jsonl", "csv"):
        refused = results(stack, finished["batch_id"], key=other, params={"format": fmt})
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert results(stack, "no-such-batch").status_code == 404
    bad = results(stack, finished["batch_id"], params={"format": "xlsx"})
    assert bad.status_code == 422 and "format" in bad.json()["error"]["details"]


def test_the_cli_writes_the_csv_to_stdout(stack: Stack, finished: dict[str, Any]) -> None:
    env = {"BATCHCALLS_API_URL": stack.api_url, "BATCHCALLS_API_KEY": stack.api_key}
    done = CliRunner().invoke(cli, ["results", finished["batch_id"], "--format", "csv"], env=env)
    assert done.exit_code == 0, done.output
    assert done.stdout_bytes == results(stack, finished["batch_id"], params={"format": "csv"}).content
    as_jsonl = CliRunner().invoke(cli, ["results", finished["batch_id"]], env=env)
    assert len(as_jsonl.output.splitlines()) == len(finished["calls"])
    missing = CliRunner().invoke(cli, ["results", "no-such-batch"], env=env)
    assert missing.exit_code != 0 and "404" in missing.output
