"""100,000 calls waiting for their calling window on the real stack (worker processes, beat's
reconciler every second, Redis, Postgres, the simulator): they are stored `scheduled` at submit,
nothing is dialed, and the workers' memory stays flat through several reconciler sweeps: no
task and no slot per waiting call, and no sweep reads them all back from Postgres."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
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
