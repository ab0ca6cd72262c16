"""CSV uploads through the API on the real stack (worker processes, Redis, Postgres, the
simulator): `text/csv` with the options as query parameters and `multipart/form-data` with an
`options` part; columns become variables and metadata; bad rows are named by line and column and
nothing is stored; an Idempotency-Key replays; the size limit. Waits on conditions, never sleeps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
import requests

from api import csv_upload
from batchcalls.adapters.gates import Gates
from tests.integration.test_pipeline import number
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

MAX_CSV_BYTES = 200_000


@pytest.fixture(scope="module")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        running = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("csv")),
            BATCHCALLS_SIM_RING_SECONDS="0.1",
            BATCHCALLS_SIM_CALL_SECONDS="0.2",
            BATCHCALLS_MAX_CSV_BYTES=str(MAX_CSV_BYTES),
        )
        try:
            yield running
        finally:
            running.stop()


def upload(stack: Stack, csv_text: str, params: dict[str, str] | None = None, **headers: str) -> requests.Response:
    return requests.post(
        f"{stack.api_url}/v1/batches",
        params=params,
        data=csv_text.encode(),
        headers={**stack.headers(**headers), "Content-Type": "text/csv"},
        timeout=60,
    )


def batch_count(stack: Stack) -> int:
    conn = psycopg2.connect(stack.env["DATABASE_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM batches")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def stored_scripts(stack: Stack, batch_id: str) -> dict[str, Any]:
    conn = psycopg2.connect(stack.env["DATABASE_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT phone_number, script FROM calls WHERE batch_id = %s", (batch_id,))
            return dict(cur.fetchall())
    finally:
        conn.close()


def test_a_csv_becomes_a_batch_with_variables_and_metadata_and_completes(stack: Stack) -> None:
    rows = [(number(500 + i, 0), f"Ada{i}", f"crm-{i}") for i in range(5)]
    csv_text = "\ufeffphone_number,first_name,metadata.crm_id\n" + "".join(f"{p},{n},{c}\n" for p, n, c in rows)
    params = {"text": "Hello {{first_name}}, this is Acme.", "concurrency": "3", "retry_config": '{"max_attempts": 2}'}
    answer = upload(stack, csv_text, params)
    assert answer.status_code == 202, answer.text
    status = answer.json()
    assert (status["total_calls"], status["concurrency"], status["retry_config"]["max_attempts"]) == (5, 3, 2)
    final = stack.wait_finished(status["batch_id"])
    assert (final["status"], final["completed_calls"]) == ("completed", 5)
    calls = {c["phone_number"]: c for c in stack.all_calls(status["batch_id"])}
    scripts = stored_scripts(stack, status["batch_id"])
    for phone, name, crm in rows:
        assert calls[phone]["metadata"] == {"crm_id": crm}
        assert scripts[phone]["steps"][0]["text"] == f"Hello {name}, this is Acme."


def test_bad_rows_are_named_by_line_and_column_and_nothing_is_stored(stack: Stack) -> None:
    before = batch_count(stack)
    csv_text = (
        "phone_number,text,priority\n"
        f"{number(520, 0)},Hi,1\n"
        "not-a-number,Hi,1\n"
        f"{number(521, 0)},Hi,high\n"
        f"{number(522, 0)},Hi\n"
        "\n"
        f"{number(523, 0)},,2\n"
    )
    answer = upload(stack, csv_text)
    assert answer.status_code == 422, answer.text
    # The rows' shapes first, then each chunk's first kind of problem (as a JSON body's are).
    assert answer.json()["error"]["details"] == {
        "line 4, column priority": ["Not a valid integer."],
        "line 5": ["has 2 cells, but the header has 3 columns"],
        "line 7": ["has no text: give it in a text column, or the upload's `text` option"],
    }
    numbers = upload(stack, f"phone_number,text\n{number(525, 0)},Hi\nnot-a-number,Hi\n+1 555,Hi\n")
    assert numbers.status_code == 422 and numbers.json()["error"]["code"] == "invalid_phone_number"
    assert list(numbers.json()["error"]["details"]) == ["line 3, column phone_number", "line 4, column phone_number"]
    assert batch_count(stack) == before
    header_only = upload(stack, "phone_number,text\n")
    assert header_only.status_code == 422 and "no calls" in header_only.json()["error"]["message"]
    no_number = upload(stack, "number,text\n+442079460000,Hi\n")
    assert no_number.status_code == 422 and "line 1" in no_number.json()["error"]["details"]
    bad_option = upload(stack, f"phone_number\n{number(524, 0)}\n", {"text": "Hi", "concurrency": "many"})
    assert bad_option.status_code == 422 and list(bad_option.json()["error"]["details"]) == ["concurrency"]
    assert batch_count(stack) == before


def test_a_multipart_upload_takes_its_options_from_a_json_part_and_replays_by_key(stack: Stack) -> None:
    csv_text = f"phone_number,text\n{number(530, 0)},Hello\n{number(531, 0)},Hello again\n"

    def send() -> requests.Response:
        return requests.post(
            f"{stack.api_url}/v1/batches",
            files={"file": ("calls.csv", csv_text.encode(), "text/csv")},
            data={"options": json.dumps({"priority": 2, "metadata": {"campaign": "spring"}})},
            headers=stack.headers(**{"Idempotency-Key": "csv-multipart-1"}),
            timeout=60,
        )

    first = send()
    assert first.status_code == 202, first.text
    assert (first.json()["priority"], first.json()["metadata"]) == (2, {"campaign": "spring"})
    again = send()
    assert again.status_code == 202 and again.json()["batch_id"] == first.json()["batch_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    stack.wait_finished(first.json()["batch_id"])


def test_a_csv_over_the_size_limit_is_a_413(stack: Stack) -> None:
    line = f"{number(540, 0)},{'x' * 90}\n"
    answer = upload(stack, "phone_number,text\n" + line * (MAX_CSV_BYTES // len(line) + 10))
    assert answer.status_code == 413, answer.text
    assert "BATCHCALLS_MAX_CSV_BYTES" in answer.json()["error"]["message"]


def test_an_uploaded_batch_is_queued_in_redis_before_its_answer(stack: Stack) -> None:
    """Its calls are read back from Postgres and queued by the submit itself (not left to the
    reconciler): a batch that starts in an hour holds all of them in its ready set at once."""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    rows = "".join(f"{number(550 + i, 0)},Hi\n" for i in range(30))
    answer = upload(stack, "phone_number,text\n" + rows, {"start_at": later})
    assert answer.status_code == 202, answer.text
    batch_id = answer.json()["batch_id"]
    gates = Gates(redis.Redis.from_url(stack.env["REDIS_URL"]), 60)
    assert gates.exists(batch_id) and gates.depth(batch_id) == (30, 0, 0)
    assert (
        requests.post(f"{stack.api_url}/v1/batches/{batch_id}/cancel", headers=stack.headers(), timeout=60).json()[
            "cancelled_calls"
        ]
        == 30
    )


def test_a_csv_that_is_not_utf8_is_a_422(stack: Stack) -> None:
    answer = requests.post(
        f"{stack.api_url}/v1/batches",
        data=b"phone_number,text\n+442079460000,caf\xe9\n",
        headers={**stack.headers(), "Content-Type": "text/csv"},
        timeout=60,
    )
    assert answer.status_code == 422, answer.text
    assert ["is not UTF-8 text"] in answer.json()["error"]["details"].values()


def test_a_large_csv_is_checked_in_a_second_process_with_the_same_answers(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above `POOL_BYTES` the groups of rows are checked in a process pool (here: every CSV)."""
    monkeypatch.setattr(csv_upload, "POOL_BYTES", 0)
    monkeypatch.setattr(csv_upload, "CHUNK_ROWS", 4)
    rows = "".join(f"{number(560 + i, 0)},Name{i}\n" for i in range(10))
    answer = upload(stack, "phone_number,first_name\n" + rows, {"text": "Hello {{first_name}}"})
    assert answer.status_code == 202, answer.text
    final = stack.wait_finished(answer.json()["batch_id"])
    assert (final["total_calls"], final["completed_calls"]) == (10, 10)
    scripts = stored_scripts(stack, answer.json()["batch_id"])
    assert scripts[number(569, 0)]["steps"][0]["text"] == "Hello Name9"
    bad = upload(stack, "phone_number,first_name\n" + rows + "nope,X\n", {"text": "Hello {{first_name}}"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_phone_number"
    assert list(bad.json()["error"]["details"]) == ["line 12, column phone_number"]
