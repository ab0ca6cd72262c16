"""100,000 calls waiting for their calling window on the real stack (worker processes, beat's
reconciler every second, Redis, Postgres, the simulator): they are stored `scheduled` at submit,
nothing is dialed, and the workers' memory stays flat through several reconciler sweeps: no
task and no slot per waiting call, and no sweep reads them all back from Postgres. When their
window opens, they are dialed at the batch's concurrency with no burst of tasks."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg2
import pytest
import redis
import requests

from tests.integration.test_control import wait_for
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

CALLS = 100_000
SWEEPS = 5
FLAT_MB = 40  # a sweep that read 100,000 calls into a worker would add far more


@pytest.fixture(scope="module")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        running = start_stack(own.database_url, own.redis_url, Path(tmp_path_factory.mktemp("window-scale")))
        try:
            yield running
        finally:
            running.stop()


def worker_rss_mb(stack: Stack) -> float:
    """The largest resident set of any worker process (main or pool child), in MB."""
    sizes = []
    for popen in stack.workers.values():
        main = psutil.Process(popen.pid)
        sizes += [p.memory_info().rss for p in [main, *main.children(recursive=True)]]
    return max(sizes) / 2**20


def sweeps_done(stack: Stack) -> int:
    """Reconciler sweeps the workers have finished so far (from their logs)."""
    pattern = re.compile(r"Task batchcalls\.reconcile\[[^\]]+\] succeeded")
    return sum(len(pattern.findall(path.read_text(errors="replace"))) for path in stack.log_dir.glob("w*.log"))


def test_100000_calls_waiting_for_their_window_cost_no_dial_and_no_memory(stack: Stack) -> None:
    now = datetime.now(UTC)
    opens = now + timedelta(hours=2)
    window = {
        "start": opens.strftime("%H:%M"),
        "end": (opens + timedelta(hours=1)).strftime("%H:%M"),
        "timezone": "UTC",
    }
    wait_for(lambda: sweeps_done(stack) >= 2, "the workers warmed up by two sweeps")
    before = worker_rss_mb(stack)
    body = {
        "calls": [{"phone_number": f"+4420794{i:05d}", "script": {"text": "Hi"}} for i in range(CALLS)],
        "concurrency": 50,
        "calling_window": window,
    }
    answer = requests.post(f"{stack.api_url}/v1/batches", json=body, headers=stack.headers(), timeout=300)
    assert answer.status_code == 202, answer.text[:500]
    status = answer.json()
    assert (status["pending"], status["scheduled"], status["in_progress"]) == (CALLS, CALLS, 0)
    batch_id = status["batch_id"]
    swept = sweeps_done(stack)
    wait_for(lambda: sweeps_done(stack) >= swept + SWEEPS, f"{SWEEPS} reconciler sweeps", timeout=120)
    after = worker_rss_mb(stack)
    print(f"\nworker RSS with {CALLS:,} calls waiting for their window: {before:.0f} MB before, {after:.0f} MB after")
    assert after - before < FLAT_MB
    status = stack.status(batch_id)
    assert (status["status"], status["scheduled"], status["started_at"]) == ("queued", CALLS, None)
    assert not [c for c in stack.sim_creates() if c["phone_number"].startswith("+4420794")]
    first = requests.get(
        f"{stack.api_url}/v1/batches/{batch_id}/calls", params={"limit": 1}, headers=stack.headers(), timeout=60
    ).json()["calls"][0]
    opening = datetime.fromisoformat(first["next_attempt_at"].replace("Z", "+00:00"))
    assert opening == opens.replace(second=0, microsecond=0)
    cancelled = requests.post(f"{stack.api_url}/v1/batches/{batch_id}/cancel", headers=stack.headers(), timeout=60)
    assert cancelled.status_code == 200 and cancelled.json()["cancelled_calls"] == CALLS


def queued_tasks(client: redis.Redis) -> int:
    """Task messages waiting in the broker's lists (every priority list of every queue)."""
    return sum(int(client.llen(key)) for key in client.keys("celery*") + client.keys("deliveries*"))


def most_live(stack: Stack, batch_id: str) -> int:
    """The most attempts of the batch live at one moment (from dial to end, in Postgres)."""
    conn = psycopg2.connect(stack.env["DATABASE_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT a.dialed_at, coalesce(a.ended_at, 'infinity') FROM attempts a"
                " JOIN calls c ON c.id = a.call_id WHERE c.batch_id = %s",
                (batch_id,),
            )
            spans = cur.fetchall()
    finally:
        conn.close()
    # Ends sort before starts at the same instant: a slot freed then taken is not two live calls.
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    live = most = 0
    for _, step in edges:
        live += step
        most = max(most, live)
    return most


def test_a_window_opening_for_100000_calls_dials_them_at_the_batch_concurrency_without_a_burst(stack: Stack) -> None:
    concurrency, dialed = 50, 1000
    now = datetime.now(UTC)
    opens = (now + timedelta(seconds=90)).replace(second=0, microsecond=0)  # 30 to 90 s ahead
    window = {
        "start": opens.strftime("%H:%M"),
        "end": (opens + timedelta(hours=1)).strftime("%H:%M"),
        "timezone": "UTC",
    }
    body = {
        "calls": [{"phone_number": f"+4420795{i:05d}", "script": {"text": "Hi"}} for i in range(CALLS)],
        "concurrency": concurrency,
        "calling_window": window,
    }
    answer = requests.post(f"{stack.api_url}/v1/batches", json=body, headers=stack.headers(), timeout=300)
    assert answer.status_code == 202, answer.text[:500]
    batch_id = answer.json()["batch_id"]
    assert answer.json()["scheduled"] == CALLS

    def created() -> list[dict[str, object]]:
        return [c for c in stack.sim_creates() if str(c["phone_number"]).startswith("+4420795")]

    # The broker's lists are watched from the submit until `dialed` calls were created: one task
    # per waiting call at the opening would put 100,000 messages there.
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    deepest = 0
    deadline = opens.timestamp() + 120
    while len(found := created()) < dialed:
        assert time.time() < deadline, (
            f"only {len(found)} calls created by {deadline - opens.timestamp():.0f} s after the opening"
        )
        deepest = max(deepest, queued_tasks(client))
        time.sleep(0.05)
    client.close()
    cancelled = requests.post(
        f"{stack.api_url}/v1/batches/{batch_id}/cancel",
        json={"hangup_live_calls": True},
        headers=stack.headers(),
        timeout=60,
    )
    assert cancelled.status_code == 200
    stack.wait_finished(batch_id, timeout=120)
    first = min(float(str(c["at"])) for c in found)
    print(
        f"\nwindow opening for {CALLS:,} calls: most task messages waiting {deepest}, most live {most_live(stack, batch_id)}"
    )
    assert first >= opens.timestamp()
    assert most_live(stack, batch_id) <= concurrency
    assert deepest <= 5 * concurrency
