"""Scenario 8: the results export of a large finished batch, in both formats: rows per second
through the API (request to last byte) and the API's peak RSS while it streams.

The batch is written straight into Postgres (a finished batch, one answered attempt per call,
metadata and variables on every call, a response on every tenth), which takes seconds where
placing its calls would take minutes; the export reads it as it would a batch the engine ran."""

from __future__ import annotations

import time

import psutil
import requests

from batchcalls.adapters.store.tenants import hash_key
from bench.rows import Row
from bench.stack import MemorySampler, Stack

MB = 1024 * 1024

_BATCH = (
    "INSERT INTO batches (id, tenant_id, status, concurrency, priority, retry_config, total_calls,"
    " completed_calls, started_at, finished_at)"
    " SELECT %s, k.tenant_id, 'completed', 100, 5, '{\"max_attempts\": 1}', %s, %s, now(), now()"
    " FROM api_keys k WHERE k.key_hash = %s"
)
_CALLS = (
    "INSERT INTO calls (id, batch_id, seq, phone_number, priority, script, status, outcome, attempt_count,"
    " responses, metadata, variables)"
    " SELECT %s || '_' || i, %s, i, '+44207' || lpad(i::text, 6, '0') || '0', 5,"
    ' \'{"type": null, "steps": [{"type": "text", "text": "Hi"},'
    ' {"type": "input", "dtmf": true, "name": "menu"}]}\','
    " 'completed', 'completed', 1,"
    " CASE WHEN i %% 10 = 0 THEN jsonb_build_array(jsonb_build_object('id', 'r' || i, 'step', 1, 'name', 'menu',"
    "  'attempt', 1, 'digits', '1', 'speech', '[]'::jsonb, 'timed_out', false, 'at', '2026-11-23T13:43:50.001Z'))"
    "  ELSE '[]'::jsonb END,"
    " jsonb_build_object('crm_id', 'C-' || i), jsonb_build_object('name', 'Customer ' || i)"
    " FROM generate_series(0, %s - 1) AS i"
)
_ATTEMPTS = (
    "INSERT INTO attempts (call_id, number, status, outcome, provider, provider_call_id, dialed_at,"
    " answered_at, ended_at, last_event_at)"
    " SELECT id, 1, 'ended', 'completed', 'simulator', 'sim-' || id, now() - interval '60 s',"
    " now() - interval '55 s', now() - interval '25 s', now() - interval '25 s'"
    " FROM calls WHERE batch_id = %s"
)


def _finished_batch(stack: Stack, calls: int) -> str:
    batch_id = f"batch_export_{time.time_ns()}"
    with stack.cursor() as cur:
        cur.execute(_BATCH, (batch_id, calls, calls, hash_key(stack.api_key)))
        if cur.rowcount != 1:
            raise RuntimeError("the bench's API key was not found")
        cur.execute(_CALLS, (batch_id.replace("batch_", "call_"), batch_id, calls))
        cur.execute(_ATTEMPTS, (batch_id,))
        cur.execute("ANALYZE calls")
        cur.execute("ANALYZE attempts")
    return batch_id


def _export(stack: Stack, batch_id: str, fmt: str) -> tuple[int, float]:
    """(lines received, seconds from the request to the last byte)."""
    started = time.perf_counter()
    lines = 0
    with requests.get(
        f"{stack.api_url}/v1/batches/{batch_id}/results",
        params={"format": fmt},
        headers={"Authorization": f"Bearer {stack.api_key}"},
        stream=True,
        timeout=600,
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=1 << 16):
            lines += chunk.count(b"\n")
    return lines, time.perf_counter() - started


def export(stack: Stack, calls: int) -> dict[str, float]:
    """Export a finished `calls`-call batch as JSONL then CSV from a freshly started API."""
    batch_id = _finished_batch(stack, calls)
    stack.stop("api")
    stack.start_api()
    api = psutil.Process(stack.pids()["api"])
    before = max(p.memory_info().rss for p in [api, *api.children(recursive=True)])
    figures: dict[str, float] = {}
    with MemorySampler({"api": stack.pids()["api"]}) as sampler:
        for fmt, header_lines in (("jsonl", 0), ("csv", 1)):
            lines, seconds = _export(stack, batch_id, fmt)
            if lines != calls + header_lines:
                raise RuntimeError(f"the {fmt} export gave {lines - header_lines} rows for {calls} calls")
            figures[f"export_{fmt}_rows_s"] = calls / seconds
    figures["export_api_before_mb"] = before / MB
    figures["export_api_peak_mb"] = sampler.peaks["api"].process / MB
    figures["export_api_growth_mb"] = max(0.0, sampler.peaks["api"].process - before) / MB
    return figures


def rows(calls: int) -> list[Row]:
    return [
        Row(
            "8 Results export",
            f"{calls:,}-call finished batch, JSONL, request -> last byte",
            "export_jsonl_rows_s",
            "rows/s",
            ">= 50,000",
            (lambda v: v >= 50_000) if calls >= 100_000 else None,
        ),
        Row(
            "",
            "... CSV",
            "export_csv_rows_s",
            "rows/s",
            ">= 50,000",
            (lambda v: v >= 50_000) if calls >= 100_000 else None,
        ),
        Row("", "API, largest process, before the exports", "export_api_before_mb", "MB", "", None),
        Row("", "API, largest process, peak during both exports", "export_api_peak_mb", "MB", "", None),
    ]
