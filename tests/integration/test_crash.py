"""A worker SIGKILLed mid-batch: every call still ends once, no attempt is dialed twice."""

from __future__ import annotations

import collections
import time

import pytest

from tests.integration.test_pipeline import number
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_worker_killed_mid_batch_loses_and_doubles_nothing(stack: Stack) -> None:
    digits = [0, 0, 0, 4, 1, 7, 2, 0, 9, 5]
    body = {
        "calls": [{"phone_number": number(500 + i, digits[i % 10]), "script": {"text": "Hi"}} for i in range(60)],
        "concurrency": 6,
        "callback_url": stack.receiver.url,
        "retry_config": {"max_attempts": 2, "delay": 0.5, "retry_on": ["busy"]},
    }
    batch_id = stack.submit(body)["batch_id"]
    deadline = time.time() + 60
    while (progress := stack.status(batch_id))["completed_calls"] + progress["failed_calls"] < 6:  # mid-batch
        assert time.time() < deadline, f"the batch made no progress: {progress}"
        time.sleep(0.1)
    assert progress["finished_at"] is None, "the batch ended before the crash"
    stack.kill_worker("w1")
    stack.start_worker("w1-restarted")
    killed_at = time.time()
    final = stack.wait_finished(batch_id, timeout=150)
    print(f"\nbatch finished {time.time() - killed_at:.1f}s after the kill")

    calls = stack.all_calls(batch_id)
    assert len(calls) == 60
    assert all(c["status"] in ("completed", "failed") for c in calls)
    assert final["completed_calls"] + final["failed_calls"] == 60
    assert final["completed_calls"] == sum(c["status"] == "completed" for c in calls)

    ours = {c["id"] for c in calls}
    creates = [(c["call_id"], c["attempt"]) for c in stack.sim_creates() if c["call_id"] in ours]
    doubled = [k for k, n in collections.Counter(creates).items() if n > 1]
    assert doubled == [], f"attempts dialed twice: {doubled}"
    recorded = {(c["id"], a["number"]) for c in calls for a in c["attempts"]}
    assert set(creates) <= recorded

    stack.receiver.wait_for(batch_id, {"batch.completed", "batch.failed"}, timeout=60)
    stack.wait_delivered(batch_id)  # the outbox has nothing left to send: no late duplicate can come
    events = stack.receiver.events(batch_id)
    terminal = [e for e in events if e["type"] in ("batch.completed", "batch.failed")]
    assert len(terminal) == 1
    per_call = collections.Counter(e["data"]["id"] for e in events if e["type"].startswith("batch.call_"))
    assert set(per_call) == ours  # every call reported; a repeat may only be a redelivery of one event
    assert len({e["id"] for e in events if e["type"].startswith("batch.call_")}) == 60
