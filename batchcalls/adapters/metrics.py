"""Fleet-wide metrics. Workers count into Redis (one hash, so every process of the fleet adds to
the same numbers); `GET /metrics` renders them with gauges read from Postgres and Redis, in the
Prometheus text format, through prometheus_client's collector interface.

Counters live in Redis and start again from zero if Redis is flushed; Prometheus treats that as a
counter reset, as it does a process restart."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from batchcalls.adapters import redis_keys
from batchcalls.adapters.logs import quoted
from batchcalls.adapters.queues import QUEUES
from batchcalls.adapters.store.db import Database
from batchcalls.domain.states import ACTIVE_BATCH_STATUSES, LIVE_STATUSES, CallStatus, values

log = logging.getLogger("batchcalls.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# The newest dispatch-latency samples (redis_keys.METRICS_LATENCY_SAMPLES), exact, newest first
# (a capped list), each `freed:<seconds>` (a slot freed by a call that ended, given to the next)
# or `other:<seconds>` (a batch's first calls, retries coming due, slots recovered by the reconciler).
LATENCY_SAMPLES = 10_000
# Counts reach Redis (and /metrics) within about this long.
FLUSH_SECONDS = 0.5
# How long `GET /metrics` answers from its last read of Postgres.
DATABASE_CACHE_SECONDS = 5.0
# The calls `GET /metrics` counts from Postgres: the live ones and those waiting for a retry.
_COUNTED = LIVE_STATUSES | {CallStatus.SCHEDULED}
BROKER_QUEUES = [f"{queue}{step}" for queue in QUEUES for step in ["", *(f":{n}" for n in range(1, 10))]]


class Metrics:
    """What the engine counts. Counts are added up in the process and written to Redis together,
    in one round trip, at most every `flush_seconds` (a background thread writes them): a round
    trip per call ended and per call dialed had been a twentieth of a worker's profile samples.
    A process that dies loses at most that much of its counts, which Prometheus cannot tell from
    a scrape that came a little early. Never an error for the caller."""

    def __init__(self, client: redis.Redis, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.redis = client
        self.flush_seconds = flush_seconds
        self._pid: int | None = None  # the process whose counts these are (its thread flushes)

    def _start(self) -> None:
        """The first count in this process (or the first since a fork: what the parent had not
        flushed yet is the parent's to write)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._samples: list[str] = []
        threading.Thread(target=self._flush_every, name="metrics-flush", daemon=True).start()

    def _add(self, fields: dict[str, float], sample: str | None = None) -> None:
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            self._counts.update(fields)
            if sample is not None:
                self._samples.append(sample)

    def _flush_every(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush()

    def flush(self) -> None:
        """Write the counts added since the last flush. Counts Redis refused are kept for the
        next one; latency samples are not (the histogram has them)."""
        if self._pid != os.getpid():
            return  # nothing counted in this process
        with self._lock:
            counts, samples = self._counts, self._samples
            self._counts, self._samples = Counter(), []
        if not counts and not samples:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for field, amount in counts.items():
                pipe.hincrbyfloat(redis_keys.METRICS, field, amount)
            if samples:
                pipe.lpush(redis_keys.METRICS_LATENCY_SAMPLES, *samples)  # the newest ends up first
                pipe.ltrim(redis_keys.METRICS_LATENCY_SAMPLES, 0, LATENCY_SAMPLES - 1)
            pipe.execute()
        except redis.RedisError as exc:  # metrics never fail a call
            log.debug("metrics not recorded yet error=%s", quoted(exc))
            with self._lock:
                self._counts.update(counts)

    def call_finished(self, outcome: str) -> None:
        self._add({f"calls_total:{outcome}": 1})

    def call_dialed(self, dispatch_latency: float | None = None, *, freed: bool = False) -> None:
        """One dial, and with `dispatch_latency` its wait from slot grant to create; `freed`:
        the slot was freed by a call that ended."""
        if dispatch_latency is None:
            self._add({"dials_total": 1})
        else:
            self.dispatch_latency(dispatch_latency, {"dials_total": 1}, freed=freed)

    def webhook(self, *, delivered: bool, count: int = 1) -> None:
        self._add({"webhook_deliveries_total" if delivered else "webhook_failures_total": count})

    def dispatch_latency(self, seconds: float, also: dict[str, float] | None = None, *, freed: bool = False) -> None:
        """Count one observation into the histogram, and keep the exact sample in a capped list
        (the newest `LATENCY_SAMPLES`) for percentiles the buckets cannot give (the benchmark).
        `also`: more counters to add with it."""
        fields = {**(also or {}), "dispatch_latency_count": 1, "dispatch_latency_sum": seconds}
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                fields[f"dispatch_latency_bucket:{bound}"] = 1
        self._add(fields, f"{'freed' if freed else 'other'}:{seconds:.6f}")


class FleetCollector(Collector):
    """`GET /metrics`'s figures. Postgres's (calls by status, active batches) are read at most
    once per `cache_seconds` whatever the rate of scrapes (scrapes meanwhile, concurrent ones
    included, are answered from the last read): /metrics asks no key, so a burst of scrapes
    must not turn into a burst of queries. The counters, from Redis, are read at every scrape."""

    def __init__(
        self,
        db: Database,
        client: redis.Redis,
        *,
        cache_seconds: float = DATABASE_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.redis = client
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._figures: tuple[dict[str, int], list[str]] | None = None
        self._read_at = 0.0

    def _database_figures(self) -> tuple[dict[str, int], list[str]]:
        """(calls by status among the live and scheduled ones, active batch ids), cached."""
        with self._lock:
            if self._figures is None or self._clock() - self._read_at >= self.cache_seconds:
                with self.db.transaction() as cur:
                    cur.execute(
                        "SELECT status, count(*) AS n FROM calls WHERE status = ANY(%s) GROUP BY status",
                        (values(_COUNTED),),
                    )
                    by_status = {row["status"]: row["n"] for row in cur.fetchall()}
                    cur.execute("SELECT id FROM batches WHERE status = ANY(%s)", (values(ACTIVE_BATCH_STATUSES),))
                    active = [row["id"] for row in cur.fetchall()]
                self._figures, self._read_at = (by_status, active), self._clock()
            return self._figures

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        counts = self.redis.hgetall(redis_keys.METRICS)
        raw = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in counts.items()}
        outcomes = CounterMetricFamily(
            "batchcalls_calls", "Calls that reached a final state, by outcome", labels=["outcome"]
        )
        for field, value in raw.items():
            if field.startswith("calls_total:"):
                outcomes.add_metric([field.split(":", 1)[1]], value)
        yield outcomes
        yield CounterMetricFamily(
            "batchcalls_dials", "Attempts handed to the provider", value=raw.get("dials_total", 0)
        )
        yield CounterMetricFamily(
            "batchcalls_webhook_deliveries",
            "Batch events delivered (2xx)",
            value=raw.get("webhook_deliveries_total", 0),
        )
        yield CounterMetricFamily(
            "batchcalls_webhook_failures",
            "Batch event delivery attempts that failed",
            value=raw.get("webhook_failures_total", 0),
        )
        # Each observation was counted into every bucket it fits, so the counts are cumulative.
        buckets = [(str(bound), raw.get(f"dispatch_latency_bucket:{bound}", 0)) for bound in LATENCY_BUCKETS]
        buckets.append(("+Inf", raw.get("dispatch_latency_count", 0)))
        yield HistogramMetricFamily(
            "batchcalls_dispatch_latency_seconds",
            "From a slot being granted to the provider being asked to dial",
            buckets=buckets,
            sum_value=raw.get("dispatch_latency_sum", 0),
        )
        by_status, active = self._database_figures()
        live = GaugeMetricFamily("batchcalls_calls_live", "Calls dialing, ringing or in progress", labels=["status"])
        for status in values(LIVE_STATUSES):
            live.add_metric([status], by_status.get(status, 0))
        yield live
        yield GaugeMetricFamily(
            "batchcalls_calls_scheduled",
            "Calls waiting for a retry",
            value=by_status.get(CallStatus.SCHEDULED.value, 0),
        )
        yield GaugeMetricFamily(
            "batchcalls_batches_active", "Batches scheduled, queued, running or paused", value=len(active)
        )
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in active:
            pipe.zcard(redis_keys.batch_ready(batch_id))
        ready = sum(pipe.execute()) if active else 0
        yield GaugeMetricFamily(
            "batchcalls_queue_depth", "Calls waiting for a slot in their batch's ready queue", value=ready
        )
        pipe = self.redis.pipeline(transaction=False)
        for queue in BROKER_QUEUES:
            pipe.llen(queue)
        yield GaugeMetricFamily(
            "batchcalls_broker_queue_depth", "Celery messages waiting in the broker", value=sum(pipe.execute())
        )
