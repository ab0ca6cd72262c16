"""Metrics add up in the process and reach Redis together, by a background flush (fakeredis);
/metrics reads Postgres at most once per interval."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import fakeredis
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest

from batchcalls.adapters.metrics import FleetCollector, Metrics
from batchcalls.adapters.redis_keys import METRICS, METRICS_LATENCY_SAMPLES


def _counts(client: redis.Redis) -> dict[str, float]:
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in client.hgetall(METRICS).items()}


def test_counts_reach_redis_added_up_in_one_flush() -> None:
    client = fakeredis.FakeRedis()
    metrics = Metrics(client, flush_seconds=60)  # no background flush within the test
    for _ in range(3):
        metrics.call_finished("completed")
    metrics.call_dialed(0.004, freed=True)
    metrics.call_dialed(0.3)
    assert _counts(client) == {}
    metrics.flush()
    counts = _counts(client)
    assert counts["calls_total:completed"] == 3
    assert counts["dials_total"] == 2
    assert counts["dispatch_latency_count"] == 2
    assert counts["dispatch_latency_sum"] == pytest.approx(0.304)
    assert counts["dispatch_latency_bucket:0.005"] == 1 and counts["dispatch_latency_bucket:0.5"] == 2
    assert client.lrange(METRICS_LATENCY_SAMPLES, 0, -1) == [b"other:0.300000", b"freed:0.004000"]  # newest first
    metrics.flush()  # nothing new: nothing added twice
    assert _counts(client)["dials_total"] == 2


def test_the_background_thread_flushes_without_being_asked() -> None:
    client = fakeredis.FakeRedis()
    metrics = Metrics(client, flush_seconds=0.05)
    metrics.webhook(delivered=True, count=5)
    deadline = time.time() + 2
    while not _counts(client) and time.time() < deadline:
        time.sleep(0.01)
    assert _counts(client) == {"webhook_deliveries_total": 5}


class _Down(fakeredis.FakeRedis):
    down = True

    def pipeline(self, *args: object, **kwargs: object) -> redis.client.Pipeline:
        if self.down:
            raise redis.ConnectionError("Redis is restarting")
        return super().pipeline(*args, **kwargs)


def test_counts_redis_refused_wait_for_the_next_flush() -> None:
    client = _Down()
    metrics = Metrics(client, flush_seconds=60)
    metrics.call_finished("busy")
    metrics.flush()  # never an error for the caller
    metrics.call_finished("busy")
    client.down = False
    metrics.flush()
    assert _counts(client) == {"calls_total:busy": 2}


def test_a_forked_child_does_not_write_its_parents_counts_again() -> None:
    client = fakeredis.FakeRedis()  # after the fork, each process has its own copy of its data
    metrics = Metrics(client, flush_seconds=60)
    metrics.call_finished("completed")  # not flushed when the fork happens
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child counts one of its own and flushes
        metrics.call_finished("completed")
        metrics.flush()
        os.write(write, repr(_counts(client)).encode())
        os._exit(0)
    child_wrote = os.read(read, 1000).decode()
    os.waitpid(pid, 0)
    assert child_wrote == repr({"calls_total:completed": 1.0})
    metrics.flush()
    assert _counts(client) == {"calls_total:completed": 1}


class _CountingDatabase:
    """A Database whose every transaction is counted and answers two live calls and one batch.
    Its first query lasts until `overlapping` scrapes have begun, so that they all overlap it."""

    def __init__(self, overlapping: int) -> None:
        self.transactions = 0
        self.scrapes = 0
        self.overlapping = overlapping
        self._changed = threading.Condition()

    def scraping(self) -> None:
        with self._changed:
            self.scrapes += 1
            self._changed.notify_all()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._changed:
            self.transactions += 1
            assert self._changed.wait_for(lambda: self.scrapes >= self.overlapping, timeout=30)
        rows = iter([[{"status": "dialing", "n": 2}], [{"id": "batch_one"}]])
        cursor = mock.Mock()
        cursor.fetchall.side_effect = lambda: next(rows)
        yield cursor


def _scrape(registry: CollectorRegistry, db: _CountingDatabase) -> str:
    db.scraping()
    return generate_latest(registry).decode()


def test_a_burst_of_scrapes_reads_the_database_once_per_interval() -> None:
    db = _CountingDatabase(overlapping=8)  # every thread of the pool is scraping during the query
    now = [1000.0]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(db, fakeredis.FakeRedis(), cache_seconds=5, clock=lambda: now[0]))  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda _: _scrape(registry, db), range(40)))
    assert db.transactions == 1
    assert all('batchcalls_calls_live{status="dialing"} 2.0' in text for text in texts)
    assert all("batchcalls_batches_active 1.0" in text for text in texts)
    now[0] += 4.9
    _scrape(registry, db)
    assert db.transactions == 1
    now[0] += 0.1  # the interval is over: the next scrape reads again, once
    for _ in range(10):
        _scrape(registry, db)
    assert db.transactions == 2
