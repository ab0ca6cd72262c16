"""The dial scheduler (lua/scheduler.lua) on fakeredis's Lua: who creates the next call when the
calls-per-second limit is the bottleneck. A pacer is simulated turn by turn on a clock the test
moves (tests/unit/conftest.py), so every assertion is about order and counts, never about timing.
"""

from __future__ import annotations

from collections import Counter

from batchcalls.adapters import redis_keys
from batchcalls.adapters.gates import Gates, ready_score
from batchcalls.adapters.scheduler import Report
from tests.unit.conftest import Clock

ACCOUNT = "acct"
LIMIT = 5


def submit(gates: Gates, batch_id: str, tenant: str, calls: int, *, concurrency: int = 100, priority: int = 5) -> None:
    """A batch loaded and registered as `dispatch` does under a calls-per-second limit."""
    gates.load_batch(
        batch_id,
        concurrency,
        [(f"{batch_id}-{i}", ready_score(priority, i)) for i in range(calls)],
        tenant=tenant,
    )
    grant = gates.acquire(batch_id, at_most=0)
    assert not grant.granted
    if grant.wants is not None:
        gates.join(ACCOUNT, batch_id, grant.tenant, grant.wants)


class Pacer:
    """What `Engine.pace` does, without tasks: take a turn, give its batch one slot, report."""

    def __init__(self, gates: Gates, clock: Clock, token: str = "pacer") -> None:
        self.gates, self.clock, self.token = gates, clock, token
        self.report: Report | None = None
        self.dialed: list[tuple[float, str, str]] = []  # (instant, batch, call)

    def turns(self, n: int) -> list[str]:
        """Take up to `n` turns that place a call (moving the clock through waits); the batches."""
        placed: list[str] = []
        while len(placed) < n:
            turn = self.gates.take_turn(ACCOUNT, self.token, LIMIT, 1.0, lookahead=0, hold=3.0, report=self.report)
            self.report = None
            if turn.kind == "wait":
                self.clock.advance(turn.wait)
                continue
            if turn.kind != "grant":
                break
            grant = self.gates.acquire(turn.batch_id, at_most=1)
            give_back = "" if grant.granted else turn.member
            call_id = grant.granted[0][0] if grant.granted else ""
            self.report = Report(turn.batch_id, grant.wants, turn.tenant, give_back, turn.member, call_id)
            if grant.granted:
                self.dialed.append((turn.at, turn.batch_id, grant.granted[0][0]))
                placed.append(turn.batch_id)
        return placed


def test_a_lower_priority_number_dials_first_once_it_waits(gates: Gates, clock: Clock) -> None:
    submit(gates, "big", "a", 120, concurrency=40, priority=5)
    pacer = Pacer(gates, clock)
    assert set(pacer.turns(30)) == {"big"}
    submit(gates, "urgent", "a", 10, concurrency=10, priority=0)
    assert pacer.turns(12) == ["urgent"] * 10 + ["big"] * 2


def test_tenants_share_turns_equally_whatever_their_batches_ask(gates: Gates, clock: Clock) -> None:
    submit(gates, "a-big", "a", 500, concurrency=200)  # a high concurrency buys no bigger share
    for i in range(5):
        submit(gates, f"b-{i}", "b", 100, concurrency=10)
    submit(gates, "c-1", "c", 100, concurrency=50)
    by_batch = Counter(Pacer(gates, clock).turns(90))
    by_tenant = Counter(batch.split("-")[0] for batch in by_batch.elements())
    assert by_tenant == {"a": 30, "b": 30, "c": 30}
    assert [by_batch[f"b-{i}"] for i in range(5)] == [6] * 5


def test_a_newcomer_starts_level_with_the_others_and_earns_no_credit_for_waiting(gates: Gates, clock: Clock) -> None:
    submit(gates, "first", "a", 300, concurrency=300)
    pacer = Pacer(gates, clock)
    pacer.turns(100)
    submit(gates, "second", "b", 100)
    assert Counter(pacer.turns(20)) == {"first": 10, "second": 10}


def test_a_batch_without_a_free_slot_is_passed_over_and_its_instant_given_back(gates: Gates, clock: Clock) -> None:
    submit(gates, "narrow", "a", 50, concurrency=2)
    submit(gates, "wide", "b", 50, concurrency=50)
    pacer = Pacer(gates, clock)
    assert Counter(pacer.turns(12)) == {"narrow": 2, "wide": 10}
    # No creation instant was spent on the turns "narrow" could not use.
    instants = [at for at, _, _ in pacer.dialed]
    assert all(sum(1 for t in instants if s <= t < s + 1.0) <= LIMIT for s in instants)
    in_log = gates.redis.zrange(redis_keys.cps_log(ACCOUNT), 0, -1)
    assert len(in_log) == sum(1 for at in instants if at > clock.now - 1.0)
    # A slot freed by an ended call brings the batch back.
    grant = gates.acquire("narrow", release=["narrow-0"], at_most=0)
    assert grant.wants == 5
    gates.join(ACCOUNT, "narrow", grant.tenant, grant.wants)
    assert "narrow" in pacer.turns(2)


def test_never_more_creations_in_a_window_than_the_limit(gates: Gates, clock: Clock) -> None:
    for i in range(4):
        submit(gates, f"batch-{i}", f"t{i}", 30)
    pacer = Pacer(gates, clock)
    pacer.turns(100)
    instants = sorted(at for at, _, _ in pacer.dialed)
    assert max(sum(1 for t in instants if s <= t < s + 1.0) for s in instants) == LIMIT
    # Used to the full: 100 creations in 20 windows.
    assert instants[-1] - instants[0] < 20.0


def test_a_paused_batch_loses_its_turns_until_it_is_registered_again(gates: Gates, clock: Clock) -> None:
    submit(gates, "paused", "a", 20)
    submit(gates, "running", "b", 20)
    gates.set_paused("paused", paused=True)
    pacer = Pacer(gates, clock)
    assert set(pacer.turns(5)) == {"running"}
    gates.set_paused("paused", paused=False)
    grant = gates.acquire("paused", at_most=0)
    assert grant.wants is not None
    gates.join(ACCOUNT, "paused", grant.tenant, grant.wants)
    assert "paused" in pacer.turns(4)


def test_one_pacer_at_a_time_and_a_new_one_when_work_arrives_after_idle(gates: Gates, clock: Clock) -> None:
    gates.load_batch("b1", 5, [("c1", ready_score(5, 1))], tenant="a")
    assert gates.join(ACCOUNT, "b1", "a", 5) is True  # nobody paces: the caller starts a pacer
    assert gates.join(ACCOUNT, "b1", "a", 5) is False  # one is starting
    first = gates.take_turn(ACCOUNT, "one", LIMIT, 1.0, lookahead=0, hold=3.0)
    assert first.kind == "grant"
    assert gates.take_turn(ACCOUNT, "two", LIMIT, 1.0, lookahead=0, hold=3.0).kind == "other"
    grant = gates.acquire("b1", at_most=1)
    report = Report("b1", grant.wants, grant.tenant)
    assert gates.take_turn(ACCOUNT, "one", LIMIT, 1.0, lookahead=0, hold=3.0, report=report).kind == "idle"
    assert gates.kick(ACCOUNT) is False  # nothing waits
    gates.load_batch("b2", 5, [("c2", ready_score(5, 1))], tenant="a")
    assert gates.join(ACCOUNT, "b2", "a", 5) is True


def test_a_pacer_that_died_is_replaced_once_its_mark_runs_out(gates: Gates, clock: Clock) -> None:
    submit(gates, "b1", "a", 20)
    assert gates.take_turn(ACCOUNT, "dead", LIMIT, 1.0, lookahead=0, hold=3.0).kind == "grant"
    mark = redis_keys.scheduler_keys(ACCOUNT)[2]
    assert 0 < gates.redis.pttl(mark) <= 3000  # the mark runs out unless its pacer takes turns
    assert gates.kick(ACCOUNT) is False  # a pacer runs: none is started
    gates.redis.delete(mark)  # what its running out does
    assert gates.kick(ACCOUNT) is True


def test_a_pacer_hands_its_role_to_the_next_task(gates: Gates, clock: Clock) -> None:
    submit(gates, "b1", "a", 20)
    assert gates.take_turn(ACCOUNT, "old", LIMIT, 1.0, lookahead=0, hold=3.0).kind == "grant"
    assert gates.handoff(ACCOUNT, "stranger") is False
    assert gates.handoff(ACCOUNT, "old") is True
    clock.advance(1.0)
    assert gates.take_turn(ACCOUNT, "new", LIMIT, 1.0, lookahead=0, hold=3.0).kind == "grant"
    assert gates.take_turn(ACCOUNT, "old", LIMIT, 1.0, lookahead=0, hold=3.0).kind == "other"


def test_a_tenant_calls_per_second_ceiling_leaves_the_rest_of_the_limit_to_others(gates: Gates, clock: Clock) -> None:
    gates.set_tenant_limits(ACCOUNT, "a", 1, None)
    submit(gates, "a-1", "a", 100)
    submit(gates, "b-1", "b", 100)
    pacer = Pacer(gates, clock)
    assert Counter(pacer.turns(50)) == {"a-1": 10, "b-1": 40}  # 10 windows of 5: a one each
    a_turns = [at for at, batch, _ in pacer.dialed if batch == "a-1"]
    assert all(later - earlier >= 1.0 for earlier, later in zip(a_turns, a_turns[1:], strict=False))


def test_a_tenant_concurrency_ceiling_counts_calls_across_its_batches(gates: Gates, clock: Clock) -> None:
    gates.set_tenant_limits(ACCOUNT, "a", None, 3)
    submit(gates, "a-1", "a", 50)
    submit(gates, "a-2", "a", 50)
    submit(gates, "b-1", "b", 50)
    pacer = Pacer(gates, clock)
    assert Counter(batch.split("-")[0] for batch in pacer.turns(10)) == {"a": 3, "b": 7}
    # One of a's calls ends: its slot is released, and a is back in the running.
    _, batch_id, call_id = next(d for d in pacer.dialed if d[1].startswith("a-"))
    grant = gates.acquire(batch_id, release=[call_id], at_most=0)
    gates.settle(ACCOUNT, batch_id, "a", grant.wants, [call_id])
    clock.advance(0.2)  # a tenant at its ceiling is looked at again within 100 ms
    assert Counter(batch.split("-")[0] for batch in pacer.turns(4)) == {"a": 1, "b": 3}


def test_ceilings_removed_give_the_tenant_its_equal_share_again(gates: Gates, clock: Clock) -> None:
    gates.set_tenant_limits(ACCOUNT, "a", 1, None)
    submit(gates, "a-1", "a", 100)
    submit(gates, "b-1", "b", 100)
    pacer = Pacer(gates, clock)
    pacer.turns(10)
    gates.set_tenant_limits(ACCOUNT, "a", None, None)
    clock.advance(1.0)
    shares = Counter(pacer.turns(20))
    assert abs(shares["a-1"] - shares["b-1"]) <= 2, shares  # equal, but for who goes first
