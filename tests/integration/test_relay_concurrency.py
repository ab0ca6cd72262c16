"""The outbox relay's Redis lock under contention: six OS processes run `Relay.run` for one
batch on a real Redis, with the lock's own code (SET NX, the renew-if-ours script, the release
and the kick script); only the delivery itself is replaced by a stand-in that records what each
relay saw. At most one relay holds a batch's lock at a time, a relay never renews or releases a
lock it lost, and an event kicked while a relay runs is never left waiting for the next sweep."""

from __future__ import annotations

import random
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from batchcalls.adapters.delivery import relay as delivery
from batchcalls.adapters.delivery.kicks import Kicks
from batchcalls.adapters.delivery.relay import Relay
from batchcalls.adapters.redis_keys import relay_keys
from batchcalls.adapters.store.db import Database
from config.settings import Settings
from tests.support.processes import run_processes
from tests.support.servers import TestServers

pytestmark = pytest.mark.integration

PROCESSES = 6

# The relay lock's lifetime in the contention test (normally a webhook timeout + 5 s). At 0.1 s,
# a renewal check left 15 ms for the process to be scheduled again, and six processes on two
# loaded cores now and then took longer (a CI run saw 0.042 s left where 0.05 s was due).
LOCK_SECONDS = 0.2
WEBHOOK_TIMEOUT = LOCK_SECONDS / 2  # the rest of it is the margin: renewed after a quarter of it
STALL_SECONDS = 0.3  # a pause longer than the lock: a GC pause, a stalled host, a slow network
STALL_CHANCE = 0.06  # of each Redis command a relay sends
SLACK = 0.01  # Redis checks expiry against its cached clock: judge only what is 10 ms clear of it


def _token(still_ours: Callable[[], bool]) -> str:
    """The token of the lock a relay's `still_ours` renews (a bound method of `delivery._Held`)."""
    lock = still_ours.__self__.lock  # type: ignore[attr-defined]
    return str(lock.local.token.decode())


class _StallingRedis(redis.Redis):
    """A client that now and then pauses before it sends a command, so that a relay's lock runs
    out between any two of its round trips (the gaps a real fleet has)."""

    rng: random.Random = random.Random(0)
    stalls = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.rng.random() < STALL_CHANCE:
            type(self).stalls += 1
            time.sleep(STALL_SECONDS)
        return super().execute_command(*args, **options)


class _WatchedRelay(Relay):
    """`Relay.run` as it is; the delivery of events replaced by a stand-in that renews the lock
    before each "POST" (as `_deliver_due` does) and records what it could prove it held.

    A relay that sent a renewal at `sent` and got True back at `back` held the lock from `back`
    until `sent + lock` at least (the renewal ran on Redis in between and pushed the expiry to
    its own time + lock), or until it let go of it itself, after its delivery returned. These
    proven intervals of different holders must never overlap."""

    def __init__(self, settings: Settings, client: redis.Redis, checker: redis.Redis, rng: random.Random) -> None:
        super().__init__(settings, Database("postgresql://unused"), client)
        self.checker = checker
        self.rng = rng
        self.held: list[tuple[str, float, float]] = []  # (token, proven from, proven until)
        self.problems: list[str] = []
        self.lost = 0  # renewals that found the lock gone or another's

    def _deliver_due(self, batch_id: str, still_ours: Callable[[], bool]) -> tuple[int, float | None]:
        proven: list[tuple[float, float]] = []
        try:
            return self._deliver(batch_id, still_ours, proven)
        finally:
            letting_go = time.monotonic()  # the relay may release its lock from now on
            self.held += [(_token(still_ours), since, min(until, letting_go)) for since, until in proven]

    def _deliver(
        self, batch_id: str, still_ours: Callable[[], bool], proven: list[tuple[float, float]]
    ) -> tuple[int, float | None]:
        token = _token(still_ours)
        holding = still_ours.__self__  # type: ignore[attr-defined]
        lock_key = relay_keys(batch_id)[0]
        lock = LOCK_SECONDS - SLACK
        posts = 0
        for _ in range(self.rng.randint(1, 6)):
            if self.rng.random() < 0.02:
                time.sleep(STALL_SECONDS)  # a POST that outlives the lock
            ours = still_ours()
            back = time.monotonic()
            # Sent (before the acquisition or the last renewal that succeeded) at `sent`: the
            # lock is ours until `sent + lock` at least.
            sent = holding.sent_at
            if not ours:
                self.lost += 1
                if back < sent + lock:
                    self.problems.append(
                        f"lock {token} was gone {back - sent:.3f}s after its renewal:"
                        " another relay renewed, released or took it"
                    )
                return posts, None
            if sent + lock < back + WEBHOOK_TIMEOUT:
                self.problems.append(
                    f"lock {token} said ours with {sent + lock - back:.3f}s left, less than a POST's timeout"
                )
            proven.append((back, sent + lock))
            value = self.checker.get(lock_key)
            if time.monotonic() < sent + lock and value != token.encode():
                self.problems.append(f"renewal of {token} returned True while the lock held {value!r}")
            # The POST: mostly quick, now and then a good part of its timeout.
            time.sleep(self.rng.uniform(0, WEBHOOK_TIMEOUT / 2 if self.rng.random() < 0.2 else 0.002))
            posts += 1
        return posts, None


def _settings(redis_url: str, webhook_timeout: float) -> Settings:
    return Settings(database_url="postgresql://unused", redis_url=redis_url, webhook_timeout_seconds=webhook_timeout)


def _lock_worker(redis_url: str, batch_id: str, seed: int, seconds: float, start: Any, results: Any) -> None:
    try:
        delivery.LOCK_MARGIN_SECONDS = LOCK_SECONDS - WEBHOOK_TIMEOUT  # this process only
        rng = random.Random(seed)
        _StallingRedis.rng = random.Random(seed + 1000)
        relay = _WatchedRelay(
            _settings(redis_url, WEBHOOK_TIMEOUT),
            _StallingRedis.from_url(redis_url),
            redis.Redis.from_url(redis_url),
            rng,
        )
        start.wait()
        deadline = time.monotonic() + seconds
        runs = 0
        while time.monotonic() < deadline:
            relay.run(batch_id)
            runs += 1
            time.sleep(rng.uniform(0, 0.003))
        results.put(("ok", relay.held, relay.problems, relay.lost, _StallingRedis.stalls, runs))
    except BaseException:
        results.put(("error", traceback.format_exc()))


class _CountingRelay(Relay):
    """Delivery replaced by a stand-in: "events" are a counter other processes raise (the commit
    of an event); a relay delivers every one written so far, as `pending_events` would."""

    def __init__(self, settings: Settings, client: redis.Redis, batch_id: str) -> None:
        super().__init__(settings, Database("postgresql://unused"), client)
        self.written_key = f"test:{{{batch_id}}}:written"
        self.delivered_key = f"test:{{{batch_id}}}:delivered"

    def _deliver_due(self, batch_id: str, still_ours: Callable[[], bool]) -> tuple[int, float | None]:
        delivered = 0
        while True:
            written = int(self.redis.get(self.written_key) or 0)
            done = int(self.redis.get(self.delivered_key) or 0)
            if written <= done:
                return delivered, None
            assert still_ours(), "the relay lost its lock in a test that never lets it expire"
            self.redis.set(self.delivered_key, written)
            delivered += written - done


def _kick_worker(redis_url: str, batch_id: str, seed: int, rounds: int, start: Any, results: Any) -> None:
    """Write events and kick, as `Engine.kick_delivery` does after each commit; a kick that asks
    for a task runs that task here at once (`deliver`: task_starting, then Relay.run). After each
    round, all processes idle: by then every event written must have been delivered."""
    try:
        rng = random.Random(seed)
        client = redis.Redis.from_url(redis_url)
        settings = _settings(redis_url, 10.0)
        kicks = Kicks(settings, client)
        relay = _CountingRelay(settings, client, batch_id)
        tasks = 0
        left: list[str] = []
        start.wait()
        for round_ in range(rounds):
            events = rng.randint(1, 4)
            for n in range(events):
                client.incr(relay.written_key)
                if kicks.needs_task(batch_id, urgent=n == events - 1 and rng.random() < 0.5):
                    tasks += 1
                    kicks.task_starting(batch_id)
                    relay.run(batch_id)
                time.sleep(rng.uniform(0, 0.0005))
            start.wait()  # every process is idle now: no relay runs, none will start
            written = int(client.get(relay.written_key) or 0)
            delivered = int(client.get(relay.delivered_key) or 0)
            if delivered != written:
                left.append(f"round {round_}: {written - delivered} of {written} events left for the next sweep")
            start.wait()  # all have looked before anyone writes again
        results.put(("ok", tasks, left))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def test_one_relay_holds_a_batch_lock_at_a_time_and_none_touches_a_lock_it_lost(servers: TestServers) -> None:
    batch_id = "relay-" + uuid.uuid4().hex[:8]
    answers = run_processes(
        _lock_worker, [(servers.redis_url, batch_id, seed, 5.0) for seed in range(PROCESSES)], timeout=60
    )
    problems = [p for answer in answers for p in answer[2]]
    assert not problems, "\n".join(problems[:10])

    # Each lock (token) was held, provably, over the hull of its proven intervals; two locks' hulls
    # never overlap: no relay renewed while another one held the batch's lock.
    hulls: dict[str, tuple[float, float]] = {}
    for answer in answers:
        for token, since, until in answer[1]:
            if since < until:
                low, high = hulls.get(token, (since, until))
                hulls[token] = (min(low, since), max(high, until))
    ordered = sorted(hulls.values())
    overlaps = [(a, b) for a, b in zip(ordered, ordered[1:]) if b[0] < a[1]]
    assert not overlaps, f"{len(overlaps)} overlapping holds, first: {overlaps[0]}"

    lost = sum(answer[3] for answer in answers)
    stalls = sum(answer[4] for answer in answers)
    runs = sum(answer[5] for answer in answers)
    print(f"{runs} relay runs, {len(hulls)} locks held, {lost} lost to expiry, {stalls} stalled commands")
    assert len(hulls) >= 20, "too few locks were taken: the test proved nothing"
    assert lost > 0 and stalls > 0, "no lock ever ran out under a relay: the test proved nothing"
    redis.Redis.from_url(servers.redis_url).delete(*relay_keys(batch_id))


def test_events_kicked_while_a_relay_runs_are_delivered_without_a_sweep(servers: TestServers) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    batch_id = "kick-" + uuid.uuid4().hex[:8]
    rounds = 150
    answers = run_processes(
        _kick_worker, [(servers.redis_url, batch_id, seed, rounds) for seed in range(PROCESSES)], timeout=120
    )
    written = int(client.get(f"test:{{{batch_id}}}:written") or 0)
    tasks = sum(answer[1] for answer in answers)
    left = sorted({line for answer in answers for line in answer[2]})
    print(f"{written} events in {rounds} rounds, {tasks} deliver tasks")
    assert not left, "\n".join(left[:10])
    assert client.exists(relay_keys(batch_id)[0]) == 0, "a relay left its lock behind"
    assert tasks < written, "every event needed a task of its own: the kicks coalesced nothing"
    client.delete(*relay_keys(batch_id), f"test:{{{batch_id}}}:written", f"test:{{{batch_id}}}:delivered")
