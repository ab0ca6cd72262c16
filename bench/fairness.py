"""Scenario 7: who dials next under the calls-per-second limit (priority, tenants, batches), and
what the dial scheduler costs per dial with many batches waiting."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

from batchcalls.adapters.gates import Gates, ready_score
from batchcalls.adapters.scheduler import Report
from bench.receiver import Receiver
from bench.scenarios import _creates, _engine_workers, _max_in_window, _wait, batch_body, number
from bench.stack import Stack

LIMIT = 5
CALL_SECONDS = 2.0
RING_SECONDS = 0.5
ACCOUNT = "bench-scheduler"


@dataclass(frozen=True)
class FairSizes:
    big_calls: int = 120
    big_concurrency: int = 40
    head_start: float = 6.0  # the big batch dials alone this long
    small_calls: int = 10
    share_tenants: int = 20
    share_batches: int = 10  # per tenant
    share_limit: int = 20
    share_turns: int = 6  # per tenant, measured
    cost_dials: int = 3000


FULL = FairSizes()
SMOKE = FairSizes(big_calls=40, big_concurrency=20, head_start=3.0, share_tenants=5, share_batches=4, cost_dials=500)


def _body(calls: int, concurrency: int, first: int, callback_url: str, priority: int = 5) -> dict[str, object]:
    body = batch_body(calls, concurrency, callback_url)
    body["calls"] = [{"phone_number": number(first + i), "script": {"text": "Hello."}} for i in range(calls)]
    body["priority"] = priority
    return body


def _behind_a_big_batch(
    stack: Stack, receiver: Receiver, sizes: FairSizes, label: str, *, urgent: bool
) -> dict[str, float]:
    log = _engine_workers(
        stack,
        label,
        BATCHCALLS_SIM_CPS=str(LIMIT),
        BATCHCALLS_SIM_CALL_SECONDS=str(CALL_SECONDS),
        BATCHCALLS_SIM_RING_SECONDS=str(RING_SECONDS),
    )
    big_key = stack.new_tenant("big")
    big, _, _ = stack.submit(_body(sizes.big_calls, sizes.big_concurrency, 0, receiver.url), big_key)
    time.sleep(sizes.head_start)
    # The other tenant's batch at the same priority, or the big tenant's own urgent batch.
    body = _body(sizes.small_calls, 10 if urgent else 5, 500_000, receiver.url, priority=0 if urgent else 5)
    small, posted, _ = stack.submit(body, big_key if urgent else None)
    _, finished = _wait(receiver, small, timeout=120)
    _wait(receiver, big, timeout=120 + 3 * sizes.big_calls / LIMIT)
    with stack.cursor() as cur:
        cur.execute("SELECT id FROM calls WHERE batch_id = %s", (small,))
        small_ids = {str(row["id"]) for row in cur.fetchall()}
    creates = _creates(log)
    by_call = _creates_by_call(log)
    first = min(by_call[c] for c in small_ids)
    rate = (len(creates) - LIMIT) / (creates[-1] - creates[LIMIT - 1])
    name = "urgent" if urgent else "other"
    return {
        f"fair_{name}_first_dial_s": first - posted,
        f"fair_{name}_done_s": finished - posted,
        f"fair_{name}_cps_utilisation": rate / LIMIT,
        f"fair_{name}_cps_max_window": float(_max_in_window(creates, 1.0)),
    }


def _creates_by_call(log: object) -> dict[str, float]:
    import json
    from pathlib import Path

    assert isinstance(log, Path)
    return {(e := json.loads(line))["call_id"]: e["at"] for line in log.read_text().splitlines() if line.strip()}


def other_tenant(stack: Stack, receiver: Receiver, sizes: FairSizes) -> dict[str, float]:
    return _behind_a_big_batch(stack, receiver, sizes, "fair-other", urgent=False)


def urgent_batch(stack: Stack, receiver: Receiver, sizes: FairSizes) -> dict[str, float]:
    return _behind_a_big_batch(stack, receiver, sizes, "fair-urgent", urgent=True)


def tenant_shares(stack: Stack, receiver: Receiver, sizes: FairSizes) -> dict[str, float]:
    """Many small batches of many tenants behind one big batch: each tenant's share of the
    creations made while all of them had calls waiting, against an equal share."""
    limit = sizes.share_limit
    log = _engine_workers(
        stack,
        "fair-shares",
        BATCHCALLS_SIM_CPS=str(limit),
        BATCHCALLS_SIM_CALL_SECONDS="0.5",
        BATCHCALLS_SIM_RING_SECONDS="0.1",
    )
    keys = [stack.new_tenant(f"share-{i}") for i in range(sizes.share_tenants + 1)]
    per_batch = 2 * sizes.share_turns  # every tenant has calls waiting all through the measure
    stack.submit(_body(400, 100, 0, receiver.url), keys[0])
    first = 1000
    for _ in range(sizes.share_batches):
        for key in keys[1:]:
            stack.submit(_body(per_batch, per_batch, first, receiver.url), key)
            first += per_batch
    submitted = time.time()
    turns = sizes.share_turns * len(keys)
    deadline = time.time() + 60 + 3 * turns / limit
    while len(after := [at for at in _creates(log) if at > submitted]) < turns:
        if time.time() > deadline:
            raise RuntimeError(f"only {len(after)} creations after the submissions")
        time.sleep(0.2)
    by_call = _creates_by_call(log)
    measured = sorted((at, call) for call, at in by_call.items() if at > submitted)[:turns]
    with stack.cursor() as cur:
        cur.execute(
            "SELECT c.id, b.tenant_id FROM calls c JOIN batches b ON b.id = c.batch_id WHERE c.id = ANY(%s)",
            ([call for _, call in measured],),
        )
        tenant_of = {str(row["id"]): row["tenant_id"] for row in cur.fetchall()}
    counts = Counter(tenant_of[call] for _, call in measured)
    equal = turns / len(keys)
    shares = [counts.get(t, 0) / equal for t in set(tenant_of.values()) | set(counts)]
    if len(counts) < len(keys):
        shares.append(0.0)
    return {"fair_share_min": min(shares), "fair_share_max": max(shares), "fair_share_tenants": float(len(keys))}


def scheduler_cost(stack: Stack, receiver: Receiver, sizes: FairSizes) -> dict[str, float]:
    """Microseconds per dial of the scheduler's Redis work (take a turn, give its batch a slot,
    report) with 10 and with 1,000 batches waiting, on the real Redis, workers stopped. The two
    are measured in alternating rounds and each figure is the median of its rounds, so that a
    busy moment of the machine weighs on both alike."""
    stack.stop_workers()
    stack.reset()
    gates = Gates(stack.redis(), lease_seconds=600)
    rounds, sizes_waiting = 5, (10, 1000)
    per_round = sizes.cost_dials // rounds
    reports: dict[int, Report | None] = {}
    for waiting in sizes_waiting:
        per_batch = max(3, 2 * sizes.cost_dials // waiting)
        for b in range(waiting):
            batch_id = f"cost-{waiting}-{b}"
            calls = [(f"{batch_id}-{i}", ready_score(5, i)) for i in range(per_batch)]
            gates.load_batch(batch_id, 10**6, calls, tenant=f"t{b % 20}")
            gates.join(f"{ACCOUNT}-{waiting}", batch_id, f"t{b % 20}", 5)
        reports[waiting] = None
    timings: dict[int, list[float]] = {waiting: [] for waiting in sizes_waiting}
    for _ in range(rounds):
        for waiting in sizes_waiting:
            account, report = f"{ACCOUNT}-{waiting}", reports[waiting]
            started = time.perf_counter()
            for _ in range(per_round):
                turn = gates.take_turn(account, "bench", 10**9, 1.0, lookahead=0, hold=60, report=report)
                grant = gates.acquire(turn.batch_id, at_most=1)
                report = Report(turn.batch_id, grant.wants, turn.tenant, member=turn.member)
            timings[waiting].append(1e6 * (time.perf_counter() - started) / per_round)
            reports[waiting] = report
    stack.redis().flushdb()
    figures = {f"sched_{waiting}_us": statistics.median(timings[waiting]) for waiting in sizes_waiting}
    figures["sched_ratio"] = figures["sched_1000_us"] / figures["sched_10_us"]
    return figures
