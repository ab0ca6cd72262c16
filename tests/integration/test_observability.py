"""What operators watch: Flower started from the Procfile line, and /metrics, during a batch."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from batchcalls.adapters.metrics import FLUSH_SECONDS
from tests.integration.test_pipeline import number
from tests.support.stack import ROOT, Stack

pytestmark = pytest.mark.integration

AUTH = ("ops", "flower-secret")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _procfile(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in the Procfile")


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Iterator[str]:
    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **stack.env,
        "FLOWER_PORT": str(port),
        "FLOWER_BASIC_AUTH": ":".join(AUTH),
        "PATH": venv_bin + os.pathsep + stack.env.get("PATH", ""),
    }
    log = open(stack.log_dir / "flower.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        ["sh", "-c", _procfile("flower")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            try:
                if requests.get(f"{url}/api/workers", auth=AUTH, timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"Flower did not start; see {stack.log_dir / 'flower.log'}")
        # Flower answers HTTP before its event receiver has subscribed, and Celery's task events
        # are not kept for a subscriber that comes late: wait until it has seen a task (beat's
        # reconciler sends one a second), so the batch's tasks are not sent before it listens.
        while time.time() < deadline:
            if requests.get(f"{url}/api/tasks", auth=AUTH, timeout=5).json():
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"Flower saw no task events; see {stack.log_dir / 'flower.log'}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


EVENT_TASKS = ("batchcalls.drain_events", "batchcalls.record_event", "batchcalls.record_events")


def test_flower_lists_the_workers_and_the_tasks_of_a_running_batch(stack: Stack, flower: str) -> None:
    assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401  # credentials required
    body = {
        "calls": [{"phone_number": number(700 + i, 0), "script": {"text": "Hi"}} for i in range(6)],
        "concurrency": 3,
    }
    batch_id = stack.submit(body)["batch_id"]
    stack.wait_finished(batch_id)
    workers = requests.get(f"{flower}/api/workers", params={"refresh": "true"}, auth=AUTH, timeout=30).json()
    assert {name.split("@")[0] for name in workers} >= set(stack.workers)
    call_ids = {c["id"] for c in stack.all_calls(batch_id)}
    deadline = time.time() + 20
    while time.time() < deadline:
        tasks = requests.get(f"{flower}/api/tasks", auth=AUTH, timeout=10).json()
        # Dialing tasks name their batch and call(s) in their arguments; a call dialed in the
        # slot another call's ending freed is named in the result of that delayed event's own
        # task (a drain of the event inbox hands such calls to `place_call` tasks).
        placed = [
            t
            for t in tasks.values()
            if t["name"] in ("batchcalls.place_call", "batchcalls.place_calls") and batch_id in (t["args"] or "")
        ]
        events = [t for t in tasks.values() if t["name"] in EVENT_TASKS]
        shown = {
            c
            for c in call_ids
            if any(c in (t["args"] or "") for t in placed) or any(f"'{c}'" in (t.get("result") or "") for t in events)
        }
        if shown == call_ids:
            break
        time.sleep(0.5)
    assert shown == call_ids, f"Flower shows where {len(shown)} of the 6 calls of {batch_id} were dialed"
    assert placed and all(t["state"] == "SUCCESS" for t in placed)
    assert events and all(t["state"] == "SUCCESS" for t in events)


def _sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(?:\{\})?") + r" ([0-9.e+-]+)"
    match = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_move_during_a_batch(stack: Stack) -> None:
    before = requests.get(f"{stack.api_url}/metrics", timeout=10)
    assert before.status_code == 200 and before.headers["Content-Type"].startswith("text/plain")
    body = {
        "calls": [{"phone_number": number(800 + i, 0 if i % 4 else 1), "script": {"text": "Hi"}} for i in range(12)],
        "concurrency": 4,
        "callback_url": stack.receiver.url,
    }
    batch_id = stack.submit(body)["batch_id"]
    live_seen = 0.0
    while stack.status(batch_id)["finished_at"] is None:
        text = requests.get(f"{stack.api_url}/metrics", timeout=10).text
        live_seen = max(
            live_seen,
            sum(_sample(text, "batchcalls_calls_live", f'status="{s}"') for s in ("dialing", "ringing", "in_progress")),
        )
        time.sleep(0.1)
    stack.receiver.wait_for(batch_id, {"batch.completed"}, timeout=30)
    old = before.text

    def moved(text: str, name: str, labels: str = "") -> float:
        return _sample(text, name, labels) - _sample(old, name, labels)

    # Workers write their counts every FLUSH_SECONDS, so the counts come a little after the batch's
    # end; the deadline only ends the wait for a count that never comes (not a figure to meet).
    deadline = time.time() + 30 + 5 * FLUSH_SECONDS
    while True:
        after = requests.get(f"{stack.api_url}/metrics", timeout=10).text
        counted = (
            moved(after, "batchcalls_dials_total"),
            moved(after, "batchcalls_calls_total", 'outcome="completed"'),
            moved(after, "batchcalls_calls_total", 'outcome="busy"'),
            moved(after, "batchcalls_webhook_deliveries_total"),
        )
        if all(n >= want for n, want in zip(counted, (12, 9, 3, 14))) or time.time() > deadline:
            break
        time.sleep(0.1)
    assert counted[:3] == (12, 9, 3)  # dials, completed, busy: each counted once
    assert counted[3] >= 14  # webhook deliveries: every event at least once
    assert moved(after, "batchcalls_dispatch_latency_seconds_count") > 0
    assert 1 <= live_seen <= 4
