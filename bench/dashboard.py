"""Scenario 11: the dashboard's pages with a large finished batch: the time to the first byte of
each page, signed in as an operator would be (a session cookie and its CSRF token).

The batch is written straight into Postgres as scenario 8's is (`export._finished_batch`), with
an event per call as a batch with a callback URL has; the pages read it as they would a batch
the engine ran. The worst searches are measured: a number near the end of the batch, and an
outcome no call has (every call of the batch is read to find none)."""

from __future__ import annotations

import re
import statistics
import time

import requests

from bench.export import _finished_batch
from bench.rows import Row
from bench.stack import Stack

REPEATS = 5
TARGET_MS = 300

_EVENTS = (
    "INSERT INTO events (id, batch_id, type, payload, created_at, delivered_at, delivery_attempts)"
    " SELECT 'evt_' || %s || '_' || i, %s, 'batch.call_completed', '{}'::jsonb, now(), now(), 1"
    " FROM generate_series(0, %s - 1) AS i"
)

PAGES = (
    ("batches", "batches list", "/batches"),
    ("batch", "batch page", "/batches/{batch}"),
    ("live", "batch page's live figures (JSON)", "/batches/{batch}/live"),
    ("history", "batch page's chart, its whole life (JSON)", "/batches/{batch}/history"),
    ("calls", "calls, first page", "/batches/{batch}/calls"),
    ("search", "calls, search by a number near the end", "/batches/{batch}/calls?number={number}"),
    ("outcome", "calls, filter by an outcome none has", "/batches/{batch}/calls?outcome=busy"),
    ("call", "one call's attempts", "/batches/{batch}/calls/{call}"),
    ("fleet", "fleet page", "/fleet"),
    ("results", "results export (CSV)", "/batches/{batch}/results?format=csv"),
)


def _signed_in(stack: Stack) -> requests.Session:
    browser = requests.Session()
    form = browser.get(f"{stack.api_url}/dashboard/sign-in", timeout=30)
    found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    if found is None:
        raise RuntimeError("the sign-in page has no CSRF token")
    answer = browser.post(
        f"{stack.api_url}/dashboard/sign-in",
        data={"api_key": stack.api_key, "csrf_token": found.group(1)},
        timeout=30,
    )
    if answer.status_code != 200 or "Sign out" not in answer.text:
        raise RuntimeError(f"signing in to the dashboard failed: {answer.status_code}")
    return browser


def _first_byte(browser: requests.Session, url: str) -> float:
    """Seconds from the request to the first byte of the body."""
    started = time.perf_counter()
    with browser.get(url, stream=True, timeout=60) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        next(response.iter_content(chunk_size=1))
        return time.perf_counter() - started


def dashboard(stack: Stack, calls: int) -> dict[str, float]:
    batch_id = _finished_batch(stack, calls)
    with stack.cursor() as cur:
        cur.execute(_EVENTS, (batch_id, batch_id, calls))
        cur.execute("ANALYZE events")
    call_prefix = batch_id.replace("batch_", "call_")
    values = {
        "batch": batch_id,
        "call": f"{call_prefix}_{calls - 1}",
        "number": "%2B44207" + f"{calls - 2:06d}0",
    }
    browser = _signed_in(stack)
    search = next(path for key, _, path in PAGES if key == "search")
    found = browser.get(stack.api_url + "/dashboard" + search.format(**values), timeout=60)
    if f"+44207{calls - 2:06d}0" not in found.text:
        raise RuntimeError("the search by number did not find the call")
    figures: dict[str, float] = {}
    for key, _, path in PAGES:
        url = stack.api_url + "/dashboard" + path.format(**values)
        _first_byte(browser, url)  # the first request of each page warms its statements
        figures[f"dash_{key}_ms"] = 1000 * statistics.median(_first_byte(browser, url) for _ in range(REPEATS))
    return figures


def rows(calls: int) -> list[Row]:
    def met(value: float) -> bool:
        return value <= TARGET_MS

    return [
        Row(
            "11 Dashboard" if i == 0 else "",
            f"{label}, {calls:,}-call batch: first byte" if i == 0 else label,
            f"dash_{key}_ms",
            "ms",
            f"<= {TARGET_MS}",
            met if calls >= 100_000 else None,
        )
        for i, (key, label, _) in enumerate(PAGES)
    ]
