"""Drill 8: hostile callback receivers. One tenant's receiver answers one byte a second, another's
answers a gigabyte (made lazily by the receiver, never held); meanwhile a third tenant runs a
batch. The processes run as in production: call workers on the `celery` queue, a delivery
worker on `deliveries`.

Checked: the third tenant's batch runs at full speed (its calls end and every one of its events
arrives, as when it ran alone: both durations are printed), the workers' memory stays flat (RSS
of every worker process, before and after), the slow tenant never has more than its share of
deliveries running, and no event is lost: the hostile tenants' events are all still in the outbox,
retried with their failed attempts recorded, none given up or skipped."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import requests

from batchcalls.adapters.store.db import Database, close_pools
from batchcalls.adapters.store.tenants import create_key
from tests.drills.harness import FAILED, REPORTED, System, number, start_system
from tests.support.bad_receivers import RawServer, huge, start_raw_server, trickle

pytestmark = [pytest.mark.drill, pytest.mark.timeout(600)]

TIMEOUT = 3  # BATCHCALLS_WEBHOOK_TIMEOUT_SECONDS: a slow receiver holds a delivery this long
GIGABYTE = 1024**3
CALLS, CONCURRENCY = 100, 20
SLOW_BATCHES = 3  # more batches than the tenant's share of deliveries (2)
TERMINAL = ("batch.completed", "batch.failed")


@pytest.fixture
def system(request: pytest.FixtureRequest) -> Iterator[System]:
    running = start_system(
        workers=2, delivery_workers=1, delivery_concurrency=4, BATCHCALLS_WEBHOOK_TIMEOUT_SECONDS=str(TIMEOUT)
    )
    try:
        yield running
    finally:
        running.stop(keep_logs=request.node.stash.get(FAILED, True))


@pytest.fixture
def hostile() -> Iterator[tuple[RawServer, RawServer]]:
    slow = start_raw_server(trickle(1.0))
    # An error page of a gigabyte: every attempt fails and is retried, each one offering 1 GB.
    big = start_raw_server(huge(GIGABYTE, status="500 Internal Server Error"))
    try:
        yield slow, big
    finally:
        slow.stop()
        big.stop()


def _body(callback_url: str, calls: int, offset: int) -> dict[str, Any]:
    return {
        "calls": [{"phone_number": number(offset + i), "script": {"text": f"Drill call {i}"}} for i in range(calls)],
        "concurrency": CONCURRENCY,
        "callback_url": callback_url,
        "retry_config": {"max_attempts": 2, "delay": 0.5, "retry_on": ["busy", "no_answer"]},
    }


def _submit(system: System, key: str, body: dict[str, Any]) -> str:
    response = requests.post(
        f"{system.api_url}/v1/batches", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    assert response.status_code == 202, response.text
    return str(response.json()["batch_id"])


def _worker_rss(system: System) -> int:
    """Resident memory of every worker process (each main process and its pool children)."""
    total = 0
    for name, proc in system.procs.items():
        if name.startswith(("w", "d")):
            main = psutil.Process(proc.pid)
            for p in [main, *main.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
    return total


class _PeakRSS:
    """Samples the workers' RSS every 0.2 s in a thread; `peak` is the highest seen."""

    def __init__(self, system: System) -> None:
        self.system, self.peak, self.stopped = system, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.2):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, _worker_rss(self.system))

    def stop(self) -> int:
        self.stopped.set()
        self.thread.join(5)
        return self.peak


def _run_third(system: System, offset: int, calls: int = CALLS) -> tuple[str, float]:
    """The third tenant's batch: submitted, then until its every event has arrived. (batch id, seconds)"""
    started = time.time()
    batch_id = system.submit(_body(system.receiver.url, calls, offset))
    system.wait_finished(batch_id, timeout=240)
    deadline = time.time() + 120
    while not any(e["type"] in TERMINAL for e in system.receiver.events(batch_id)):
        system.check_processes()
        assert time.time() < deadline, f"the terminal event of {batch_id} never arrived; logs in {system.workdir}"
        time.sleep(0.1)
    return batch_id, time.time() - started


def _outbox(system: System, batch_id: str) -> list[dict[str, Any]]:
    with system._db() as cur:
        cur.execute(
            "SELECT seq, id, type, delivered_at, given_up_at, delivery_attempts, last_error FROM events"
            " WHERE batch_id = %s ORDER BY seq",
            (batch_id,),
        )
        return list(cur.fetchall())


def test_drill_8_hostile_receivers_do_not_slow_other_tenants(
    system: System, hostile: tuple[RawServer, RawServer]
) -> None:
    slow, big = hostile
    db = Database(system.env["DATABASE_URL"])
    _, slow_key = create_key(db, "drill-slow")
    _, big_key = create_key(db, "drill-huge")
    close_pools()

    # Alone first: the third tenant's batch, end to end, after a warm-up batch (a worker's first
    # tasks open its connections).
    _run_third(system, 5000, calls=10)
    _, alone = _run_third(system, 0)
    rss_before = _worker_rss(system)
    peak = _PeakRSS(system)

    slow_batches = [_submit(system, slow_key, _body(slow.url(), 10, 1000 + 100 * i)) for i in range(SLOW_BATCHES)]
    big_batch = _submit(system, big_key, _body(big.url(), 10, 2000))
    deadline = time.time() + 60
    while not (slow.connections >= 2 and big.requests):
        system.check_processes()
        assert time.time() < deadline, "the hostile receivers were never reached"
        time.sleep(0.1)

    # Meanwhile: the third tenant again.
    third, meanwhile = _run_third(system, 3000)

    # Let the hostile receivers take a few more rounds of retries (each 1 GB answer offered again).
    deadline = time.time() + 90
    while not (len(big.requests) >= 4 and len(slow.requests) >= 4):
        system.check_processes()
        assert time.time() < deadline, f"retries stopped: slow={len(slow.requests)} huge={len(big.requests)}"
        time.sleep(0.2)
    for batch_id in [*slow_batches, big_batch]:
        system.wait_finished(batch_id, timeout=120)
    rss_after = _worker_rss(system)
    rss_peak = peak.stop()

    line = (
        f"drill=8-hostile-receivers third_alone_s={alone:.1f} third_meanwhile_s={meanwhile:.1f} "
        f"rss_before_mb={rss_before / 1e6:.0f} rss_after_mb={rss_after / 1e6:.0f} "
        f"rss_peak_mb={rss_peak / 1e6:.0f} slow_posts={len(slow.requests)} slow_most_at_once={slow.most_at_once(0.2)} "
        f"huge_posts={len(big.requests)} huge_offered_gb={len(big.requests) * GIGABYTE / 1e9:.0f} "
        f"huge_sent_mb={big.bytes_sent / 1e6:.0f}"
    )
    print("\n" + line)
    REPORTED.append(line)

    # Memory flat: 1 GB offered several times, a few KB read each time.
    assert rss_after - rss_before < 100 * 1024 * 1024, line
    assert rss_peak - rss_before < 100 * 1024 * 1024, line
    # The slow tenant's three batches never had more than its share of deliveries at once.
    assert slow.most_at_once(0.2) <= 2, line

    # The third tenant: every event arrived, once each at least, in order, all marked delivered.
    events = system.receiver.events(third)
    stored = _outbox(system, third)
    assert len(stored) == CALLS + 2 and {e["id"] for e in events} == {row["id"] for row in stored}
    assert events[0]["type"] == "batch.started" and events[-1]["type"] in TERMINAL
    assert all(row["delivered_at"] is not None for row in stored), "an event of the third tenant was not delivered"
    assert len({e["data"]["id"] for e in events if e["type"].startswith("batch.call_")}) == CALLS

    # The hostile tenants: every event kept, none given up; the first one retried, each failed
    # attempt recorded; the rest wait behind it, in order.
    for batch_id in [*slow_batches, big_batch]:
        rows = _outbox(system, batch_id)
        assert len(rows) == 10 + 2, rows  # batch.started, one per call, the terminal event
        assert all(row["given_up_at"] is None and row["delivered_at"] is None for row in rows), rows[0]
        assert rows[0]["delivery_attempts"] >= 1 and rows[0]["last_error"], rows[0]
    assert any(_outbox(system, b)[0]["delivery_attempts"] >= 2 for b in [*slow_batches, big_batch]), (
        "no event was retried"
    )
