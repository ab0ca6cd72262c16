"""Scenario 9: a CSV upload of many rows through the API, streamed: time to the 202 and the API's
peak memory. The batch starts a day later and is cancelled at once, so no call is dialed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import requests

from bench.stack import MemorySampler, Stack


def write_csv(stack: Stack, rows: int) -> bytes:
    """`rows` calls to distinct London numbers, each with its own `first_name` variable."""
    lines = ["phone_number,first_name,metadata.crm_id\n"]
    lines += [f"+44207{i:07d},Name{i},crm-{i}\n" for i in range(rows)]
    return "".join(lines).encode()


def csv_upload(stack: Stack, rows: int) -> dict[str, float]:
    stack.stop("api")
    stack.start_api(BATCHCALLS_MAX_CALLS_PER_BATCH=str(max(rows, 100_000)), BATCHCALLS_MAX_QUEUED_CALLS="5000000")
    body = write_csv(stack, rows)
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    params = {"text": "Hello {{first_name}}, this is Acme.", "concurrency": "50", "start_at": later}
    headers = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "text/csv"}
    with MemorySampler({"api": stack.pids()["api"]}) as sampler, stack.profiled(f"csv-{rows}"):
        started = time.time()
        answer = requests.post(f"{stack.api_url}/v1/batches", params=params, data=body, headers=headers, timeout=600)
        elapsed = time.time() - started
    if answer.status_code != 202:
        raise RuntimeError(f"the upload answered {answer.status_code}: {answer.text[:500]}")
    batch_id = answer.json()["batch_id"]
    requests.post(f"{stack.api_url}/v1/batches/{batch_id}/cancel", headers=headers, timeout=600)
    mb = 1024 * 1024
    return {
        f"csv_{rows}_s": elapsed,
        f"csv_{rows}_rows_per_s": rows / elapsed,
        f"csv_{rows}_api_mb": sampler.peaks["api"].process / mb,
        f"csv_{rows}_api_cpu_s": sampler.cpu_seconds("api"),
        f"csv_{rows}_mb": len(body) / mb,
    }
