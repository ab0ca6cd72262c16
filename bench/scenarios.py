"""The six measurements. Each returns plain figures; `bench.cli` takes medians and prints them."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchcalls.adapters.metrics import FLUSH_SECONDS
from batchcalls.adapters.redis_keys import METRICS_LATENCY_SAMPLES
from bench import noop
from bench.receiver import Receiver
from bench.stack import MemorySampler, Stack
from config.settings import load_settings

# Last digits the simulator answers and completes (DESIGN §6): no retries, no failures.
ANSWERED_DIGITS = "0789"


@dataclass(frozen=True)
class Sizes:
    slot_calls: int = 400
    slot_concurrency: int = 40
    slot_seconds: float = 0.5  # call and ring each
    cps_calls: int = 60
    cps_limit: int = 10
    throughput_calls: int = 5000
    submit_sizes: tuple[int, ...] = (10_000, 100_000)
    memory_seconds: float = 25.0
    csv_rows: int = 1_000_000
    export_calls: int = 100_000
    suppressed_numbers: int = 1_000_000
    dashboard_calls: int = 100_000


FULL = Sizes()
SMOKE = Sizes(
    slot_calls=40,
    slot_concurrency=10,
    slot_seconds=0.2,
    cps_calls=20,
    throughput_calls=300,
    submit_sizes=(1_000, 5_000),
    memory_seconds=2.0,
    csv_rows=2_000,
    export_calls=2_000,
    suppressed_numbers=10_000,
    dashboard_calls=2_000,
)


def number(i: int) -> str:
    """A distinct valid London number; its last digit makes the simulator complete the call."""
    return f"+44207{i:06d}{ANSWERED_DIGITS[i % len(ANSWERED_DIGITS)]}"


def batch_body(calls: int, concurrency: int, callback_url: str) -> dict[str, Any]:
    return {
        "calls": [{"phone_number": number(i), "script": {"text": f"Hello, this is call {i}."}} for i in range(calls)],
        "concurrency": concurrency,
        "callback_url": callback_url,
    }


def _sim_log(stack: Stack, label: str) -> Path:
    path = stack.workdir / f"sim-{label}-{time.time_ns()}.jsonl"
    return path


def _creates(path: Path) -> list[float]:
    if not path.exists():
        return []
    return sorted(json.loads(line)["at"] for line in path.read_text().splitlines() if line.strip())


def _engine_workers(stack: Stack, label: str, **env: str) -> Path:
    """Restart the engine's workers with a scenario's simulator settings; returns the sim log."""
    stack.stop_workers()
    stack.reset()
    log = _sim_log(stack, label)
    stack.start_workers({"BATCHCALLS_SIM_LOG": str(log), **env})
    return log


def _wait(receiver: Receiver, batch_id: str, timeout: float) -> tuple[str, float]:
    kind, at = receiver.wait_terminal(batch_id, timeout)
    if kind != "batch.completed":
        raise RuntimeError(f"batch {batch_id} ended with {kind}")
    return kind, at


# -- 1 and 5: slot utilisation, dispatch latency ------------------------------------------------


def slot_utilisation(stack: Stack, receiver: Receiver, sizes: Sizes) -> dict[str, float]:
    seconds = sizes.slot_seconds
    _engine_workers(stack, "slots", BATCHCALLS_SIM_RING_SECONDS=str(seconds), BATCHCALLS_SIM_CALL_SECONDS=str(seconds))
    body = batch_body(sizes.slot_calls, sizes.slot_concurrency, receiver.url)
    with stack.profiled("slots"):
        batch_id, started, _ = stack.submit(body)
        _, finished = _wait(receiver, batch_id, timeout=120 + 4 * sizes.slot_calls * seconds)
    ideal = math.ceil(sizes.slot_calls / sizes.slot_concurrency) * (seconds + seconds)
    measured = finished - started
    # "Slot freed -> next create": the slots that calls ending gave to the next call; the batch's
    # first placements (no slot was freed) are reported beside them.
    time.sleep(2 * FLUSH_SECONDS)  # the workers' last samples reach Redis
    tagged = [v.decode().split(":") for v in stack.redis().lrange(METRICS_LATENCY_SAMPLES, 0, -1)]
    samples = sorted(float(s) for kind, s in tagged if kind == "freed")
    starts = sorted(float(s) for kind, s in tagged if kind == "other")
    max_live = _max_live(stack, batch_id)
    if max_live > sizes.slot_concurrency:
        raise RuntimeError(f"invariant broken: {max_live} live calls, concurrency {sizes.slot_concurrency}")
    return {
        "slot_ideal": ideal,
        "slot_measured": measured,
        "slot_utilisation": ideal / measured,
        "dispatch_p50_ms": 1000 * _percentile(samples, 0.50),
        "dispatch_p99_ms": 1000 * _percentile(samples, 0.99),
        "dispatch_samples": float(len(samples)),
        "dispatch_start_p99_ms": 1000 * _percentile(starts, 0.99),
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _max_live(stack: Stack, batch_id: str) -> int:
    """The most attempts live at once, from Postgres (dialed_at .. ended_at)."""
    with stack.cursor() as cur:
        cur.execute(
            "SELECT a.dialed_at, a.ended_at FROM attempts a JOIN calls c ON c.id = a.call_id WHERE c.batch_id = %s",
            (batch_id,),
        )
        rows = cur.fetchall()
    edges = sorted(
        [(r["dialed_at"].timestamp(), 1) for r in rows]
        + [(r["ended_at"].timestamp(), -1) for r in rows if r["ended_at"]]
    )
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    return peak


# -- 2: calls per second ------------------------------------------------------------------------


def cps_utilisation(stack: Stack, receiver: Receiver, sizes: Sizes) -> dict[str, float]:
    limit = sizes.cps_limit
    log = _engine_workers(
        stack,
        "cps",
        BATCHCALLS_SIM_CPS=str(limit),
        BATCHCALLS_SIM_RING_SECONDS="0.1",
        BATCHCALLS_SIM_CALL_SECONDS="0.1",
    )
    body = batch_body(sizes.cps_calls, sizes.cps_calls, receiver.url)
    batch_id, _, _ = stack.submit(body)
    _wait(receiver, batch_id, timeout=120 + 3 * sizes.cps_calls / limit)
    creates = _creates(log)
    if len(creates) != sizes.cps_calls:
        raise RuntimeError(f"{len(creates)} creations logged for {sizes.cps_calls} calls")
    # The rate once the first window is full: creations after the first `limit`, over the time
    # they took. A limit used to the full gives exactly `limit`/s, whether calls come evenly
    # spaced or in bursts at the start of each window.
    rate = (len(creates) - limit) / (creates[-1] - creates[limit - 1])
    return {
        "cps_rate": rate,
        "cps_utilisation": rate / limit,
        "cps_max_window": float(_max_in_window(creates, 1.0)),
        "cps_limit": float(limit),
    }


def _max_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- 3: engine throughput against bare Celery ---------------------------------------------------


def throughput(stack: Stack, receiver: Receiver, sizes: Sizes) -> dict[str, float]:
    n = sizes.throughput_calls
    _engine_workers(stack, "throughput", BATCHCALLS_SIM_RING_SECONDS="0", BATCHCALLS_SIM_CALL_SECONDS="0")
    body = batch_body(n, n, receiver.url)
    with stack.profiled("throughput"):
        batch_id, started, _ = stack.submit(body)
        _, finished = _wait(receiver, batch_id, timeout=600)
    engine_rate = n / (finished - started)
    celery_rate = bare_celery_rate(stack, n)
    return {"engine_rate": engine_rate, "celery_rate": celery_rate, "engine_ratio": engine_rate / celery_rate}


def bare_celery_rate(stack: Stack, n: int) -> float:
    """No-op tasks per second through the same broker, Celery settings and worker pools."""
    stack.stop_workers()
    stack.reset()
    stack.start_workers(app="bench.noop", beat=False)
    client = stack.redis()
    sender = noop.create_app(load_settings({"REDIS_URL": stack.redis_url}))
    try:
        started = time.time()
        for _ in range(n):
            sender.send_task("bench.noop", (n,))
        deadline = time.time() + 300
        while (finished := client.get(noop.FINISHED_KEY)) is None:
            if time.time() > deadline:
                raise RuntimeError(f"bare Celery ran {client.get(noop.DONE_KEY)!r} of {n} tasks in 300 s")
            time.sleep(0.01)
        return n / (float(finished) - started)
    finally:
        sender.close()
        stack.stop_workers()


# -- 4 and 6: submit latency and memory ---------------------------------------------------------


def submit_and_memory(stack: Stack, receiver: Receiver, sizes: Sizes, calls: int) -> dict[str, float]:
    """POST a batch of `calls` to a freshly started API and workers (zero-length calls), time the
    202, and sample the RSS of the API and each worker while the batch runs for a while."""
    stack.stop("api")
    _engine_workers(stack, f"submit-{calls}", BATCHCALLS_SIM_RING_SECONDS="0", BATCHCALLS_SIM_CALL_SECONDS="0")
    stack.start_api()
    body = json.dumps(batch_body(calls, 5000, receiver.url), separators=(",", ":")).encode()
    with MemorySampler(stack.pids()) as sampler, stack.profiled(f"submit-{calls}"):
        _, _, elapsed = stack.submit(body)
        time.sleep(sizes.memory_seconds)
    peaks = sampler.peaks
    mb = 1024 * 1024
    return {
        f"submit_{calls}_s": elapsed,
        f"mem_{calls}_api_mb": peaks["api"].process / mb,
        f"mem_{calls}_api_total_mb": peaks["api"].total / mb,
        f"mem_{calls}_worker_mb": max(peaks["w1"].process, peaks["w2"].process) / mb,
        f"mem_{calls}_worker_total_mb": max(peaks["w1"].total, peaks["w2"].total) / mb,
    }
