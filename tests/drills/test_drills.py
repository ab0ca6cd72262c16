"""Fault drills: break the running system on purpose, then check every invariant of DESIGN §4.

Each drill runs a batch of 300 calls at concurrency 20 with retries on, breaks something
mid-run, and prints one line of figures (see README, Reliability)."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.drills.harness import CONCURRENCY, FAILED, REPORTED, Figures, System, batch_body, start_system

pytestmark = [pytest.mark.drill, pytest.mark.timeout(600)]


@pytest.fixture
def system(request: pytest.FixtureRequest) -> Iterator[System]:
    running = start_system()
    try:
        yield running
    finally:
        running.stop(keep_logs=request.node.stash.get(FAILED, True))


def _report(figures: Figures) -> None:
    print("\n" + figures.line())
    REPORTED.append(figures.line())


def test_drill_1_random_worker_killed_every_few_seconds(system: System) -> None:
    started = time.time()
    batch_id = system.submit(batch_body(system.receiver.url))
    system.wait_progress(batch_id, 20)
    broke_at = time.time()
    rng, kills = random.Random(7), 0
    while system.progress(batch_id) < 300 and time.time() - broke_at < 120:
        victim = rng.choice(system.workers())
        system.kill(victim)
        system.start_worker(f"w-{uuid.uuid4().hex[:6]}")
        kills += 1
        time.sleep(2.5)
    figures = system.measure("1-kill-random-worker", batch_id, broke_at, started)
    _report(figures)
    assert kills >= 2
    figures.assert_invariants()


def test_drill_1b_workers_killed_while_calls_wait_for_calls_per_second_turns() -> None:
    """Drill 1 under a calls-per-second limit: the pacer's worker dies too, and the limit holds."""
    limit = 20
    system = start_system(BATCHCALLS_SIM_CPS=str(limit))
    try:
        started = time.time()
        batch_id = system.submit(batch_body(system.receiver.url))
        system.wait_progress(batch_id, 20)
        broke_at = time.time()
        rng, kills = random.Random(11), 0
        while system.progress(batch_id) < 300 and time.time() - broke_at < 120:
            system.kill(rng.choice(system.workers()))
            system.start_worker(f"w-{uuid.uuid4().hex[:6]}")
            kills += 1
            time.sleep(2.5)
        figures = system.measure("1b-kill-workers-paced", batch_id, broke_at, started)
        _report(figures)
        assert kills >= 2
        figures.assert_invariants()
        creates = sorted(
            json.loads(line)["at"]
            for line in (system.workdir / "sim-creates.jsonl").read_text().splitlines()
            if line.strip()
        )
        assert max(sum(1 for t in creates if s <= t < s + 1.0) for s in creates) <= limit
    finally:
        system.stop(keep_logs=False)


def test_drill_2_beat_and_every_worker_killed_at_once(system: System) -> None:
    started = time.time()
    batch_id = system.submit(batch_body(system.receiver.url))
    system.wait_progress(batch_id, 60)
    for name in [*system.workers(), "beat"]:
        system.kill(name)
    time.sleep(2)
    broke_at = time.time()
    for i in range(3):
        system.start_worker(f"w-new{i}")
    system.start_beat()
    figures = system.measure("2-kill-all-workers-and-beat", batch_id, broke_at, started)
    _report(figures)
    figures.assert_invariants()


def test_drill_3_redis_flushed_then_restarted(system: System) -> None:
    started = time.time()
    batch_id = system.submit(batch_body(system.receiver.url))
    system.wait_progress(batch_id, 60)
    system.restart_redis(flush_first=True)
    broke_at = time.time()
    figures = system.measure("3-redis-flushall-and-restart", batch_id, broke_at, started)
    _report(figures)
    figures.assert_invariants()


def test_drill_4_postgres_restarted(system: System) -> None:
    started = time.time()
    batch_id = system.submit(batch_body(system.receiver.url))
    system.wait_progress(batch_id, 60)
    system.restart_postgres(down_seconds=3)
    broke_at = time.time()
    figures = system.measure("4-postgres-restart", batch_id, broke_at, started)
    _report(figures)
    figures.assert_invariants()


def test_drill_5_callback_receiver_down_then_back(system: System) -> None:
    started = time.time()
    system.receiver.go_down()
    batch_id = system.submit(batch_body(system.receiver.url))
    system.wait_progress(batch_id, 250, timeout=120)
    system.receiver.come_back()
    broke_at = time.time()
    figures = system.measure("5-receiver-down", batch_id, broke_at, started, event_wait=120)
    _report(figures)
    figures.assert_invariants()


def test_drill_6_provider_events_duplicated_reordered_delayed_lost() -> None:
    chaotic = start_system(chaos="lose=0.1,duplicate=0.2,delay=0.15,reorder=0.25,delay_seconds=2")
    try:
        started = time.time()
        batch_id = chaotic.submit(batch_body(chaotic.receiver.url))
        figures = chaotic.measure("6-provider-event-chaos", batch_id, started, started)
        _report(figures)
        done = chaotic.chaos_done(batch_id)
        line = "drill=6-provider-event-chaos chaos: " + " ".join(f"{k}={v}" for k, v in done.items())
        print(line)
        REPORTED.append(line)
        figures.assert_invariants()
        assert all(count > 0 for count in done.values()), line  # the chaos did happen
    except BaseException:
        chaotic.stop(keep_logs=True)
        raise
    chaotic.stop(keep_logs=False)


def test_drill_7_api_killed_during_submits_with_idempotent_retries(system: System) -> None:
    """Clients retry their POST with the same Idempotency-Key while the API is killed and
    restarted under them: each key yields one batch, never two, never half of one."""
    started = time.time()
    keys = [f"drill-{uuid.uuid4().hex}" for _ in range(3)]
    results: dict[str, set[str]] = {key: set() for key in keys}
    cut: list[str] = []  # POSTs the kills broke: a dropped connection or an answer other than 202
    refused: list[str] = []  # POSTs sent while the API was down
    kills_over = threading.Event()

    def client(key: str, offset: int, rng: random.Random) -> None:
        """Retries until it has a 202 given after the last kill, then and then only may stop."""
        body = batch_body(system.receiver.url, offset)
        deadline = time.time() + 120
        while time.time() < deadline:
            after_kills = kills_over.is_set()
            try:
                response = requests.post(
                    f"{system.api_url}/v1/batches",
                    json=body,
                    timeout=30,
                    headers=system.headers() | {"Idempotency-Key": key},
                )
            except requests.ConnectionError as exc:
                (refused if "refused" in str(exc).lower() else cut).append(f"{key}: {exc!r}"[:300])
            except requests.RequestException as exc:
                cut.append(f"{key}: {exc!r}"[:300])
            else:
                if response.status_code == 202:
                    results[key].add(response.json()["batch_id"])
                    if after_kills and rng.random() < 0.5:
                        return
                else:
                    cut.append(f"{key}: {response.status_code} {response.text[:200]}")
            time.sleep(rng.uniform(0.0, 0.1))

    threads = [
        threading.Thread(target=client, args=(key, 1000 * i, random.Random(70 + i))) for i, key in enumerate(keys)
    ]
    for thread in threads:
        thread.start()
    broke_at = time.time()
    for _ in range(3):
        time.sleep(0.4)
        system.kill("api")
        time.sleep(0.3)
        system.start_api()
    kills_over.set()
    for thread in threads:
        thread.join()
    with system._db() as cur:
        cur.execute("SELECT idempotency_key, count(*) AS n FROM batches GROUP BY idempotency_key")
        per_key = {row["idempotency_key"]: row["n"] for row in cur.fetchall()}
        cur.execute(
            "SELECT b.id, b.idempotency_key, b.total_calls, count(c.id) AS stored FROM batches b"
            " LEFT JOIN calls c ON c.batch_id = b.id GROUP BY b.id"
        )
        sizes = list(cur.fetchall())
    print(f"\ndrill 7: {len(cut)} POSTs cut by the kills, {len(refused)} refused while the API was down")
    assert cut, f"no POST was cut by a kill ({len(refused)} refused): the drill proved nothing"
    assert all(len(ids) == 1 for ids in results.values()), results
    assert per_key == {key: 1 for key in keys}, per_key
    assert len(sizes) == 3 and all(row["stored"] == row["total_calls"] == 300 for row in sizes), sizes
    assert {row["id"] for row in sizes} == {next(iter(ids)) for ids in results.values()}, (sizes, results)
    figures = [
        system.measure(f"7-api-killed-during-submit[{i}]", next(iter(results[key])), broke_at, started)
        for i, key in enumerate(keys)
    ]
    for one in figures:
        _report(one)
    for one in figures:
        one.assert_invariants()
    assert CONCURRENCY == 20
