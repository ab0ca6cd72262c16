"""Gates under contention: six OS processes share one batch and one calls-per-second log on a
real Redis, and the fleet-wide invariants (DESIGN §4, 1 and 2) hold, also while lease renewals
(renew.lua) race the acquires and releases."""

from __future__ import annotations

import random
import time
import traceback
import uuid
from typing import Any

import pytest
import redis

from batchcalls.adapters import redis_keys
from batchcalls.adapters.gates import Gates, Grant, ready_score
from batchcalls.adapters.scheduler import Report
from tests.support.processes import run_processes
from tests.support.servers import TestServers

pytestmark = pytest.mark.integration

PROCESSES = 6


def _lease_worker(redis_url: str, batch_id: str, seed: int, start: Any, results: Any) -> None:
    """acquire -> hold briefly -> release (+ acquire), until the queue is empty.

    A shared counter is raised after a grant and lowered before its release, so at every moment
    it counts a subset of the live leases: if it ever exceeds `concurrency`, so did the leases."""
    try:
        client = redis.Redis.from_url(redis_url)
        gates = Gates(client, lease_seconds=60)
        rng = random.Random(seed)
        holding_key = f"test:{{{batch_id}}}:holding"
        granted: list[str] = []
        holding_seen: list[int] = []
        leased_seen: list[int] = []
        held: list[str] = []
        start.wait()
        while True:
            grant = _give_back_and_take(gates, batch_id, held, rng, pause=0.002)
            leased_seen.append(gates.depth(batch_id)[2])
            held = [call_id for call_id, _ in grant.granted]
            if held:
                granted += held
                holding_seen.append(int(client.incrby(holding_key, len(held))))
                time.sleep(rng.uniform(0, 0.003))
                client.decrby(holding_key, len(held))
            elif gates.depth(batch_id)[0] == 0:
                break
            else:
                time.sleep(0.0005)
        results.put(("ok", granted, holding_seen, leased_seen))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _give_back_and_take(gates: Gates, batch_id: str, held: list[str], rng: random.Random, pause: float = 0.0) -> Grant:
    """Release `held` and lease what is free: half the time a release on its own (and a pause of
    up to `pause`), then an acquire, so other processes' acquires get the slots too (a release
    inside acquire hands the freed slots straight back to this process); else both in one."""
    if held and rng.random() < 0.5:
        gates.release(batch_id, held)
        if pause:
            time.sleep(rng.uniform(0, pause))
        grant = gates.acquire(batch_id)
    else:
        grant = gates.acquire(batch_id, release=held)
    assert not grant.missing
    return grant


def _renew_race_worker(
    redis_url: str, batch_id: str, role: str, total: int, seed: int, start: Any, results: Any
) -> None:
    """Race renew.lua against acquire and release, as the engine does: a `holder` takes leases,
    renews its own while it holds them, and releases them; a `renewer` (a reconciler sweep or a
    late provider event) keeps renewing random calls, held, released or never granted."""
    try:
        client = redis.Redis.from_url(redis_url)
        gates = Gates(client, lease_seconds=60)
        rng = random.Random(seed)
        finished_key = f"test:{{{batch_id}}}:holders-finished"
        granted: list[str] = []
        leased_seen: list[int] = []
        renewed_total = 0
        held: list[str] = []
        start.wait()
        if role == "renewer":
            ids = [f"call-{seq}" for seq in range(total)]
            while int(client.get(finished_key) or 0) < PROCESSES // 2:
                renewed_total += gates.renew(batch_id, rng.sample(ids, rng.randint(1, 8)), extra_seconds=rng.random())
                leased_seen.append(gates.depth(batch_id)[2])
            results.put(("ok", role, granted, leased_seen, renewed_total))
            return
        while True:
            grant = _give_back_and_take(gates, batch_id, held, rng)
            leased_seen.append(gates.depth(batch_id)[2])
            held = [call_id for call_id, _ in grant.granted]
            if held:
                granted += held
                for _ in range(rng.randint(1, 3)):  # the holder's own renewals never lose a live lease
                    time.sleep(rng.uniform(0, 0.001))
                    renewed = gates.renew(batch_id, held)
                    assert renewed == len(held), f"renewed {renewed} of {len(held)} held leases"
                    renewed_total += renewed
            elif gates.depth(batch_id)[0] == 0:
                break
            else:
                time.sleep(0.0005)
        client.incr(finished_key)
        results.put(("ok", role, granted, leased_seen, renewed_total))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _pace_worker(redis_url: str, account: str, batch_id: str, token: str, start: Any, results: Any) -> None:
    """Take calls-per-second turns as a `pace` task does, until no batch waits."""
    try:
        gates = Gates(redis.Redis.from_url(redis_url), lease_seconds=60)
        turns: list[float] = []
        stepped_aside = 0
        report: Report | None = None
        start.wait()
        while True:
            turn = gates.take_turn(account, token, 10, 1.0, lookahead=0, hold=3.0, report=report)
            report = None
            if turn.kind == "grant":
                grant = gates.acquire(turn.batch_id, at_most=1)
                report = Report(turn.batch_id, grant.wants, grant.tenant, "" if grant.granted else turn.member)
                turns += [turn.at] if grant.granted else []
            elif turn.kind == "wait":
                time.sleep(turn.wait)
            elif turn.kind == "other":
                stepped_aside += 1
                time.sleep(0.05)
            else:
                break
        results.put(("ok", turns, stepped_aside))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def test_six_processes_never_lease_more_than_concurrency_or_grant_a_call_twice(servers: TestServers) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    gates = Gates(client, lease_seconds=60)
    batch_id = "conc-" + uuid.uuid4().hex[:8]
    concurrency, total = 5, 800
    rng = random.Random(7)
    calls = [(f"call-{seq}", ready_score(rng.randint(0, 9), seq)) for seq in range(total)]
    gates.load_batch(batch_id, concurrency, calls)

    began = time.monotonic()
    answers = run_processes(
        _lease_worker, [(servers.redis_url, batch_id, seed) for seed in range(PROCESSES)], timeout=30
    )
    elapsed = time.monotonic() - began

    granted = [call_id for answer in answers for call_id in answer[1]]
    holding = [n for answer in answers for n in answer[2]]
    leased = [n for answer in answers for n in answer[3]]
    assert len(granted) == len(set(granted)) == total  # each call granted exactly once, none lost
    assert max(leased) <= concurrency
    assert max(holding) <= concurrency
    assert max(holding) == concurrency, "the test never filled the batch: it proved nothing"
    assert all(answer[1] for answer in answers), "some process never won a slot"
    assert gates.depth(batch_id) == (0, 0, 0)
    assert int(client.get(f"test:{{{batch_id}}}:holding") or 0) == 0
    print(f"{total} grants across {PROCESSES} processes in {elapsed:.2f}s")
    gates.forget(batch_id)
    client.delete(f"test:{{{batch_id}}}:holding")


def test_six_racing_pacers_take_turns_one_at_a_time_within_the_limit(servers: TestServers) -> None:
    account = "cps-" + uuid.uuid4().hex[:8]
    batch_id = "paced-" + uuid.uuid4().hex[:8]
    gates = Gates(redis.Redis.from_url(servers.redis_url), lease_seconds=60)
    gates.load_batch(batch_id, 1000, [(f"call-{seq}", ready_score(5, seq)) for seq in range(60)], tenant="t")
    gates.join(account, batch_id, "t", 5)
    answers = run_processes(
        _pace_worker, [(servers.redis_url, account, batch_id, f"pacer-{i}") for i in range(PROCESSES)], timeout=60
    )
    pacers = [answer for answer in answers if answer[1]]
    assert len(pacers) == 1, "more than one process took turns at once"
    assert sum(answer[2] for answer in answers) > 0, "the others never raced the pacer: the test proved nothing"
    instants = sorted(round(at * 1000) for at in pacers[0][1])
    assert len(instants) == 60 and gates.depth(batch_id) == (0, 0, 60)
    # No window of 1000 ms holds 11 turns: any 11 in a row span at least 1000 ms.
    assert min(instants[i + 10] - instants[i] for i in range(len(instants) - 10)) >= 1000
    gates.forget(batch_id)
    gates.redis.delete(*redis_keys.scheduler_keys(account))


def test_renewals_racing_acquire_and_release_never_resurrect_a_lease(servers: TestServers) -> None:
    """renew.lua, run from three processes on random calls while three others acquire and release
    them, never brings back a released lease nor creates one for a call still waiting: the batch
    never holds more leases than its concurrency and ends with none."""
    client = redis.Redis.from_url(servers.redis_url)
    gates = Gates(client, lease_seconds=60)
    batch_id = "renew-" + uuid.uuid4().hex[:8]
    concurrency, total = 5, 600
    gates.load_batch(batch_id, concurrency, [(f"call-{seq}", ready_score(0, seq)) for seq in range(total)])

    roles = ["holder", "renewer"] * (PROCESSES // 2)
    answers = run_processes(
        _renew_race_worker,
        [(servers.redis_url, batch_id, role, total, seed) for seed, role in enumerate(roles)],
        timeout=60,
    )

    holders = [a for a in answers if a[1] == "holder"]
    renewers = [a for a in answers if a[1] == "renewer"]
    granted = [call_id for answer in holders for call_id in answer[2]]
    leased = [n for answer in answers for n in answer[3]]
    assert len(granted) == len(set(granted)) == total  # renewals neither lost nor duplicated a call
    assert max(leased) <= concurrency
    assert max(leased) == concurrency, "the test never filled the batch: it proved nothing"
    # The renewers did hit live leases (so they raced the holders), and a lease they renewed was
    # never one released before: at the end no lease is left, and nothing waits.
    assert sum(answer[4] for answer in renewers) > 0, "no renewal ever found a live lease"
    assert gates.depth(batch_id) == (0, 0, 0), f"leases left behind: {gates.leases(batch_id)}"
    gates.forget(batch_id)
    client.delete(f"test:{{{batch_id}}}:holders-finished")
