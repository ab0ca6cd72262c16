"""Gates: the ready queue, slot leases and the calls-per-second log, run on fakeredis's Lua.

The scripts read the clock with Redis `TIME`; fakeredis answers it from `time.time()` in its
server module, so the `clock` fixture replaces that module's `time` with a clock the test moves.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis

from batchcalls.adapters.gates import Gates, priority_of, ready_score
from tests.unit.conftest import LEASE_SECONDS, T0, Clock


def queued(n: int, priority: int = 5) -> list[tuple[str, int]]:
    return [(f"c{seq}", ready_score(priority, seq)) for seq in range(n)]


def ids(grant_list: list[tuple[str, float]]) -> list[str]:
    return [call_id for call_id, _ in grant_list]


# -- leasing ------------------------------------------------------------------------------------


def test_acquire_never_leases_more_than_concurrency(gates: Gates) -> None:
    gates.load_batch("b", 3, queued(10))
    first = gates.acquire("b")
    assert not first.missing and first.now == T0
    assert ids(first.granted) == ["c0", "c1", "c2"]
    assert gates.acquire("b").granted == []
    assert gates.depth("b") == (7, 0, 3)


def test_acquire_counts_leases_loaded_from_postgres(gates: Gates) -> None:
    gates.load_batch("b", 3, queued(5)[2:], leased=["c0", "c1"])
    assert ids(gates.acquire("b").granted) == ["c2"]
    assert gates.depth("b") == (2, 0, 3)


def test_ready_calls_pop_by_priority_then_submission_order(gates: Gates) -> None:
    calls = [
        ("late-urgent", ready_score(0, 7)),
        ("p5-first", ready_score(5, 1)),
        ("p9", ready_score(9, 0)),
        ("early-urgent", ready_score(0, 3)),
        ("p5-second", ready_score(5, 2)),
    ]
    random.Random(4).shuffle(calls)
    gates.load_batch("b", 10, calls)
    grant = gates.acquire("b")
    assert ids(grant.granted) == ["early-urgent", "late-urgent", "p5-first", "p5-second", "p9"]
    assert [priority_of(score) for _, score in grant.granted] == [0, 0, 5, 5, 9]


def test_priority_outranks_any_submission_order() -> None:
    assert ready_score(0, 2**32 - 1) < ready_score(1, 0)
    assert priority_of(ready_score(9, 2**32 - 1)) == 9


def test_release_frees_a_slot_and_the_next_acquire_fills_it(gates: Gates) -> None:
    gates.load_batch("b", 2, queued(5))
    assert ids(gates.acquire("b").granted) == ["c0", "c1"]
    assert ids(gates.acquire("b", release=["c0"]).granted) == ["c2"]
    assert sorted(gates.leases("b")) == ["c1", "c2"]
    gates.release("b", ["c1"])
    assert gates.depth("b") == (2, 0, 1)
    assert ids(gates.acquire("b").granted) == ["c3"]


def test_releasing_an_unknown_lease_frees_nothing(gates: Gates) -> None:
    gates.load_batch("b", 1, queued(3))
    gates.acquire("b")
    assert gates.acquire("b", release=["not-a-lease"]).granted == []
    assert gates.leases("b") == ["c0"]


# -- retries ------------------------------------------------------------------------------------


def test_a_delayed_call_holds_no_slot_and_is_not_leased_before_due(gates: Gates, clock: Clock) -> None:
    gates.load_batch("b", 1, queued(2))
    assert ids(gates.acquire("b").granted) == ["c0"]
    retry = gates.acquire("b", release=["c0"], delay=[("c0", ready_score(5, 0), clock.now + 60)])
    assert ids(retry.granted) == ["c1"]  # the waiting retry gave its slot away
    assert retry.next_due_in == pytest.approx(60)
    clock.advance(59.9)
    waiting = gates.acquire("b", release=["c1"])
    assert waiting.granted == []
    assert waiting.next_due_in == pytest.approx(0.1)
    assert gates.depth("b") == (0, 1, 0)


def test_a_due_retry_is_promoted_and_leased(gates: Gates, clock: Clock) -> None:
    gates.load_batch("b", 1, [], delayed=[("c0", ready_score(5, 0), clock.now + 60)])
    assert gates.acquire("b").granted == []
    clock.advance(60)
    grant = gates.acquire("b")
    assert grant.granted == [("c0", float(ready_score(5, 0)))]
    assert grant.next_due_in is None
    assert gates.depth("b") == (0, 0, 1)


def test_a_retry_due_now_keeps_its_place_by_priority(gates: Gates, clock: Clock) -> None:
    gates.load_batch("b", 1, [("later", ready_score(5, 9)), ("urgent", ready_score(0, 8))])
    assert ids(gates.acquire("b").granted) == ["urgent"]
    retry = gates.acquire("b", release=["urgent"], delay=[("urgent", ready_score(0, 8), clock.now)])
    assert ids(retry.granted) == ["urgent"]  # due at once, and it outranks "later"
    assert gates.depth("b") == (1, 0, 1)


def test_a_retry_far_in_the_future_reports_when_it_comes_due(gates: Gates, clock: Clock) -> None:
    gates.load_batch(
        "b",
        4,
        [],
        delayed=[("c1", ready_score(5, 1), clock.now + 86_400), ("c0", ready_score(5, 0), clock.now + 3_600)],
    )
    grant = gates.acquire("b")
    assert grant.granted == [] and grant.next_due_in == pytest.approx(3_600)


def test_parking_the_same_call_twice_keeps_one_retry(gates: Gates, clock: Clock) -> None:
    gates.load_batch("b", 1, [])
    member = ("c0", ready_score(5, 0), clock.now + 10)
    gates.acquire("b", delay=[member])
    gates.acquire("b", delay=[member])
    assert gates.depth("b") == (0, 1, 0)


# -- pause and missing state --------------------------------------------------------------------


def test_a_paused_batch_leases_nothing(gates: Gates) -> None:
    gates.load_batch("b", 3, queued(5), paused=True)
    assert gates.acquire("b").granted == []
    gates.set_paused("b", paused=False)
    assert ids(gates.acquire("b").granted) == ["c0", "c1", "c2"]
    gates.set_paused("b", paused=True)
    assert gates.acquire("b", release=["c0"]).granted == []
    assert gates.depth("b") == (2, 0, 2)


def test_missing_meta_asks_for_a_rebuild(gates: Gates) -> None:
    grant = gates.acquire("nobody")
    assert grant.missing and grant.granted == [] and grant.expired == [] and grant.next_due_in is None
    assert not gates.exists("nobody")


def test_a_queue_without_meta_is_missing_not_empty(gates: Gates, client: redis.Redis) -> None:
    gates.load_batch("b", 3, queued(3))
    client.delete("bc:{b}:meta")  # e.g. evicted, or a load cut short
    assert gates.acquire("b").missing
    assert gates.depth("b") == (3, 0, 0)


def test_pausing_a_batch_whose_state_is_lost_does_not_fake_a_whole_one(gates: Gates) -> None:
    gates.set_paused("b", paused=False)
    assert not gates.exists("b")
    assert gates.acquire("b").missing
    gates.load_batch("b", 2, queued(3))
    assert gates.exists("b")
    assert ids(gates.acquire("b").granted) == ["c0", "c1"]


def test_forget_drops_every_key_of_the_batch(gates: Gates) -> None:
    gates.load_batch("b", 1, queued(2), delayed=[("c9", 9, T0 + 5)])
    gates.acquire("b")
    gates.forget("b")
    assert gates.depth("b") == (0, 0, 0) and not gates.exists("b")


# -- leases expire and renew --------------------------------------------------------------------


def test_expired_leases_are_reported_but_keep_their_slot(gates: Gates, clock: Clock) -> None:
    gates.load_batch("b", 1, queued(2))
    assert ids(gates.acquire("b").granted) == ["c0"]
    clock.advance(LEASE_SECONDS - 0.01)
    assert gates.acquire("b").expired == []
    clock.advance(0.02)
    grant = gates.acquire("b")
    assert grant.expired == ["c0"]
    assert grant.granted == []  # the engine decides whether c0 is still live
    assert gates.leases("b") == ["c0"]
    assert gates.renew("b", ["c0"]) == 1
    assert gates.acquire("b").expired == []


def test_renew_only_renews_existing_leases(gates: Gates, client: redis.Redis, clock: Clock) -> None:
    gates.load_batch("b", 2, queued(2))
    gates.acquire("b")
    clock.advance(10)
    assert gates.renew("b", ["c0", "ghost", "c1"]) == 2
    assert sorted(gates.leases("b")) == ["c0", "c1"]
    assert client.zscore("bc:{b}:leases", "c0") == clock.ms + LEASE_SECONDS * 1000
    assert gates.renew("b", ["c0"], extra_seconds=90) == 1
    assert client.zscore("bc:{b}:leases", "c0") == clock.ms + (LEASE_SECONDS + 90) * 1000
    assert gates.renew("b", []) == 0
    assert gates.renew("b", ["ghost"]) == 0
    assert client.zscore("bc:{b}:leases", "ghost") is None


def test_loaded_leases_do_not_shorten_existing_ones(gates: Gates, client: redis.Redis, clock: Clock) -> None:
    gates.load_batch("b", 2, queued(1))
    gates.acquire("b")
    gates.renew("b", ["c0"], extra_seconds=100)
    before = client.zscore("bc:{b}:leases", "c0")
    gates.load_batch("b", 2, [], leased=["c0", "c7"])
    assert client.zscore("bc:{b}:leases", "c0") == before
    assert client.zscore("bc:{b}:leases", "c7") == clock.ms + LEASE_SECONDS * 1000


# -- load_batch writes meta last -----------------------------------------------------------------


def test_load_batch_writes_meta_last(
    gates: Gates, client: redis.Redis, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    flushes: list[tuple[bool, list[Any]]] = []
    marked: list[bool] = []
    original = redis.client.Pipeline.execute

    def spy(pipe: redis.client.Pipeline, raise_on_error: bool = True) -> list[Any]:
        commands = [args[0] for args, _ in pipe.command_stack]
        flushes.append((bool(client.exists("bc:{b}:meta")), commands))
        marked.append(gates.loading("b"))
        return original(pipe, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", spy)
    gates.load_batch("b", 2, queued(5), delayed=[("c9", 9, T0 + 5)], leased=["c8"], chunk=2)
    assert len(flushes) == 3
    assert not any(meta_seen for meta_seen, _ in flushes)  # no flush ran after meta was written
    assert [cmd for _, cmds in flushes for cmd in cmds].count("HSET") == 1
    assert flushes[-1][1][-2:] == ["HSET", "DEL"]  # the meta, and the end of the loading mark
    assert marked == [True, True, True] and not gates.loading("b")
    assert client.hgetall("bc:{b}:meta") == {b"concurrency": b"2", b"paused": b"0", b"tenant": b""}
    assert gates.depth("b") == (5, 1, 1)


def test_a_load_cut_short_leaves_the_batch_missing(gates: Gates, monkeypatch: pytest.MonkeyPatch) -> None:
    original = redis.client.Pipeline.execute
    flushes = 0

    def dies_on_second_flush(pipe: redis.client.Pipeline, raise_on_error: bool = True) -> list[Any]:
        nonlocal flushes
        flushes += 1
        if flushes == 2:
            raise redis.ConnectionError("connection lost")
        return original(pipe, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", dies_on_second_flush)
    with pytest.raises(redis.ConnectionError):
        gates.load_batch("b", 2, queued(6), chunk=3)
    assert not gates.exists("b")
    assert gates.acquire("b").missing


# -- calls-per-second turns (the dial scheduler's creation log) ----------------------------------


def _waiting(gates: Gates, account: str, calls: int = 1000) -> None:
    gates.load_batch(f"b-{account}", calls, [(f"c-{account}-{i}", ready_score(5, i)) for i in range(calls)])
    gates.join(account, f"b-{account}", "", 5)


def _turn_at(gates: Gates, account: str, limit: int, window: float) -> float | None:
    """The instant of the next turn when one is due now, else None (the scheduler said wait)."""
    turn = gates.take_turn(account, "pacer", limit, window, lookahead=0, hold=60)
    return turn.at if turn.kind == "grant" else None


def test_turns_are_spaced_evenly_over_the_window(gates: Gates, clock: Clock) -> None:
    _waiting(gates, "acct")
    got = []
    while len(got) < 4:
        turn = gates.take_turn("acct", "pacer", 3, 1.0, lookahead=0, hold=60)
        if turn.kind == "wait":
            clock.advance(turn.wait)
        else:
            got.append(round((turn.at - T0) * 1000))
    assert got == [0, 333, 666, 1000]


def test_a_window_later_the_limit_is_free_again(gates: Gates, clock: Clock) -> None:
    _waiting(gates, "acct")
    for _ in range(3):
        _turn_at(gates, "acct", 3, 1.0)
    clock.advance(1.0)
    assert _turn_at(gates, "acct", 3, 1.0) == T0 + 1.0


def test_accounts_do_not_share_a_limit(gates: Gates, clock: Clock) -> None:
    _waiting(gates, "a")
    _waiting(gates, "b")
    assert _turn_at(gates, "a", 1, 1.0) == T0
    assert _turn_at(gates, "b", 1, 1.0) == T0
    assert _turn_at(gates, "a", 1, 1.0) is None


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("limit", "window_ms"), [(1, 333), (3, 1000), (10, 1000)])
def test_no_window_ever_holds_more_than_the_limit(
    gates: Gates, clock: Clock, seed: int, limit: int, window_ms: int
) -> None:
    _waiting(gates, "acct", calls=400)
    rng = random.Random(seed)
    given: list[int] = []
    for _ in range(300):
        clock.advance(rng.choice([0, 0, 0, 1, 7, 50, 120, 400, 1500]) / 1000)
        turn = gates.take_turn("acct", "pacer", limit, window_ms / 1000, lookahead=0, hold=60)
        recent = sum(clock.ms - window_ms < r <= clock.ms for r in given)
        # As early as allowed: when the window up to then holds fewer than the limit, and one
        # spacing (window / limit) after the last turn.
        due = clock.ms if not given else max(clock.ms, given[-1] + window_ms // limit)
        if len(given) >= limit:
            due = max(due, sorted(given)[-limit] + window_ms)
        if turn.kind == "grant":
            assert round(turn.at * 1000) == clock.ms == due  # a turn is due now, never in the past
            assert recent < limit
            given.append(clock.ms)
        else:
            assert turn.kind == "wait" and round(turn.wait * 1000) == due - clock.ms
    # Any limit+1 consecutive instants span more than a window: no (t - window, t] holds limit+1.
    spans = [given[i + limit] - given[i] for i in range(len(given) - limit)]
    assert spans and min(spans) >= window_ms
