"""The batch pipeline end to end on real PostgreSQL, Redis and Celery worker processes."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
import standardwebhooks
import stripe

from tests.support.stack import Stack

pytestmark = pytest.mark.integration


# phonenumbers-valid UK numbers whose last digit picks the simulator's behaviour.
def number(i: int, last_digit: int) -> str:
    return f"+4420794{i % 1000:03d}{(i // 1000) % 10}{last_digit}"


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def live_profile(calls: list[dict[str, Any]]) -> tuple[int, float]:
    """From recorded attempts: the most calls live at once, and the share of the run's time
    during which the busiest level was held."""
    edges = []
    for call in calls:
        for attempt in call["attempts"]:
            edges.append((ts(attempt["dialed_at"]), 1))
            edges.append((ts(attempt["ended_at"]), -1))
    edges.sort(key=lambda e: (e[0], e[1]))
    live = peak = 0
    held: dict[int, float] = {}
    previous = edges[0][0]
    for at, step in edges:
        held[live] = held.get(live, 0.0) + at - previous
        previous = at
        live += step
        peak = max(peak, live)
    span = edges[-1][0] - edges[0][0]
    return peak, held.get(peak, 0.0) / span


def test_forty_calls_never_exceed_concurrency_and_fill_it(stack: Stack) -> None:
    body = {
        "calls": [{"phone_number": number(i, 0), "script": {"text": f"Hello {i}"}} for i in range(40)],
        "concurrency": 4,
        "callback_url": stack.receiver.url,
    }
    batch = stack.submit(body)
    # The 202 shows the batch as it is when the answer is written: its first calls may be dialing.
    assert batch["status"] in ("queued", "running") and batch["total_calls"] == 40
    final = stack.wait_finished(batch["batch_id"], timeout=90)
    assert final["status"] == "completed"
    assert final["completed_calls"] == 40 and final["failed_calls"] == 0
    assert final["in_progress"] == 0 and final["pending"] == 0
    calls = stack.all_calls(batch["batch_id"])
    assert len(calls) == 40 and {c["status"] for c in calls} == {"completed"}
    peak, share_at_peak = live_profile(calls)
    assert peak == 4
    assert share_at_peak > 0.5, f"4 calls were live only {share_at_peak:.0%} of the run"


def test_events_are_ordered_signed_and_complete(stack: Stack) -> None:
    body = {
        "calls": [{"phone_number": number(i, d), "script": {"text": "Hi"}} for i, d in enumerate([0, 0, 1, 7, 3])],
        "concurrency": 2,
        "callback_url": stack.receiver.url,
        "metadata": {"crm": "abc"},
    }
    batch_id = stack.submit(body)["batch_id"]
    stack.wait_finished(batch_id)
    stack.receiver.wait_for(batch_id, {"batch.completed"}, timeout=30)
    stored = stack.wait_delivered(batch_id)  # the outbox has nothing left to send
    events = stack.receiver.events(batch_id)
    assert len(events) == stored, "an event was delivered twice, or one was marked delivered unsent"
    types = [e["type"] for e in events]
    assert types[0] == "batch.started"
    assert types[-1] == "batch.completed" and types.count("batch.completed") == 1
    assert types.count("batch.call_completed") == 3 and types.count("batch.call_failed") == 2
    assert len({e["id"] for e in events}) == len(events)
    terminal = events[-1]["data"]
    assert terminal["completed_calls"] == 3 and terminal["failed_calls"] == 2
    failed = [e["data"] for e in events if e["type"] == "batch.call_failed"]
    assert sorted(c["outcome"] for c in failed) == ["busy", "failed"]
    for record in stack.receiver.records(batch_id):
        payload = record.body.decode()
        stripe.WebhookSignature.verify_header(
            payload, record.headers["batchcalls-signature"], stack.webhook_secret, tolerance=600
        )
        standardwebhooks.Webhook(stack.webhook_secret).verify(record.body, record.headers)


def test_events_survive_a_failing_receiver(stack: Stack) -> None:
    stack.receiver.failing = True
    refused_before = stack.receiver.refused
    try:
        body = {
            "calls": [{"phone_number": number(i, 0), "script": {"text": "Hi"}} for i in range(3)],
            "concurrency": 3,
            "callback_url": stack.receiver.url,
        }
        batch_id = stack.submit(body)["batch_id"]
        stack.wait_finished(batch_id)
        deadline = time.time() + 30
        while stack.receiver.refused == refused_before:  # the relay has tried and been refused
            assert time.time() < deadline, "no delivery was attempted"
            time.sleep(0.1)
        assert stack.receiver.events(batch_id) == []
    finally:
        stack.receiver.failing = False
    events = stack.receiver.wait_for(batch_id, {"batch.completed"}, timeout=60)
    types = [e["type"] for e in events]
    assert types[0] == "batch.started" and types[-1] == "batch.completed"
    assert types.count("batch.call_completed") == 3


def test_busy_then_answered_completes_on_the_second_attempt_after_the_delay(stack: Stack) -> None:
    body = {
        "calls": [{"phone_number": number(1, 4), "script": {"text": "Hi"}}],
        "retry_config": {"max_attempts": 3, "delay": 1},
    }
    batch_id = stack.submit(body)["batch_id"]
    final = stack.wait_finished(batch_id)
    assert final["status"] == "completed"
    (call,) = stack.all_calls(batch_id)
    assert call["outcome"] == "completed"
    first, second = call["attempts"]
    assert first["outcome"] == "busy" and second["outcome"] == "completed"
    gap = ts(second["dialed_at"]) - ts(first["ended_at"])
    assert gap >= 1.0, gap  # not before its delay; how much later is the machine's load, not the product


def test_always_busy_fails_after_three_attempts_with_backoff(stack: Stack) -> None:
    body = {
        "calls": [{"phone_number": number(2, 1), "script": {"text": "Hi"}}],
        "retry_config": {"max_attempts": 3, "delay": 1, "backoff_multiplier": 2},
    }
    batch_id = stack.submit(body)["batch_id"]
    final = stack.wait_finished(batch_id)
    assert final["status"] == "failed" and final["failed_calls"] == 1
    (call,) = stack.all_calls(batch_id)
    assert call["status"] == "failed" and call["outcome"] == "busy"
    attempts = call["attempts"]
    assert [a["outcome"] for a in attempts] == ["busy", "busy", "busy"]
    gaps = [ts(b["dialed_at"]) - ts(a["ended_at"]) for a, b in zip(attempts, attempts[1:])]
    # Each retry waits at least its delay, the second one the doubled delay: the backoff. How much
    # later each is dialed is the machine's load, not the product.
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0, gaps


def test_no_attempt_is_dialed_twice(stack: Stack) -> None:
    # A batch of its own (three calls busy then retried once): the test does not depend on what
    # earlier tests dialed.
    body = {
        "calls": [{"phone_number": number(1200 + i, 1 if i % 2 else 0), "script": {"text": "Hi"}} for i in range(6)],
        "concurrency": 3,
        "retry_config": {"max_attempts": 2, "delay": 0.5, "retry_on": ["busy"]},
    }
    batch_id = stack.submit(body)["batch_id"]
    stack.wait_finished(batch_id)
    ours = {c["id"] for c in stack.all_calls(batch_id)}
    keys = [(c["call_id"], c["attempt"]) for c in stack.sim_creates()]
    assert sorted(a for call_id, a in keys if call_id in ours) == [1] * 6 + [2] * 3
    assert len(keys) == len(set(keys))


def test_higher_priority_calls_dial_first_then_submission_order(stack: Stack) -> None:
    priorities = [5, 5, 0, 9, 0, 3]
    body = {
        "calls": [
            {"phone_number": number(900 + i, 0), "script": {"text": "Hi"}, "priority": p}
            for i, p in enumerate(priorities)
        ],
        "concurrency": 1,
    }
    batch_id = stack.submit(body)["batch_id"]
    stack.wait_finished(batch_id)
    calls = stack.all_calls(batch_id)
    dial_order = [c["phone_number"] for c in sorted(calls, key=lambda c: ts(c["attempts"][0]["dialed_at"]))]
    expected = [number(900 + i, 0) for i in (2, 4, 5, 0, 1, 3)]
    assert dial_order == expected
    assert [c["priority"] for c in calls] == priorities


def test_a_new_batch_starts_while_a_running_batch_keeps_every_worker_busy(stack: Stack) -> None:
    """A running batch's calls follow one another from event to event; a batch submitted
    meanwhile is dispatched alongside it, not after it (an event chain above the dispatch's
    priority once held a new batch back until the running ones were done)."""
    # 100 calls at once, of 0.75 s each: more provider events than the test's four worker
    # processes apply as they come, so some are always waiting in the broker.
    running = stack.submit(
        {
            "calls": [{"phone_number": number(3000 + i, 0), "script": {"text": "Hi"}} for i in range(600)],
            "concurrency": 100,
        }
    )["batch_id"]
    deadline = time.time() + 30
    while stack.status(running)["completed_calls"] < 100 and time.time() < deadline:
        time.sleep(0.1)
    second = stack.submit(
        {"calls": [{"phone_number": number(3300 + i, 0), "script": {"text": "Hi"}} for i in range(3)], "concurrency": 3}
    )["batch_id"]
    stack.wait_finished(second, timeout=60)
    first_done = stack.wait_finished(running, timeout=120)
    second_dials = [ts(a["dialed_at"]) for c in stack.all_calls(second) for a in c["attempts"]]
    running_dials = [ts(a["dialed_at"]) for c in stack.all_calls(running) for a in c["attempts"]]
    assert first_done["completed_calls"] == 600
    # Every call of the second batch was dialed while the first still had calls to dial.
    assert max(second_dials) < max(running_dials), (max(second_dials), max(running_dials))
