"""The event inbox's Redis logic (fakeredis); tests/integration/test_inbox.py runs it on real
workers."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis

from batchcalls.adapters.redis_keys import event_drain_flag, event_stream
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import AttemptStatus, Outcome
from workers import inbox as inbox_mod
from workers.inbox import CONSUMER, GROUP, Inbox, shard_of


def ended(call_id: str, at: float = 1.0) -> ProviderEvent:
    return ProviderEvent(call_id, 1, AttemptStatus.ENDED, at, Outcome.COMPLETED, "p-" + call_id)


class Recorder:
    def __init__(self) -> None:
        self.applied: list[list[ProviderEvent]] = []

    def __call__(self, events: list[ProviderEvent]) -> str | None:
        self.applied.append(events)
        return "next-" + events[0].call_id

    @property
    def calls(self) -> list[str]:
        return [events[0].call_id for events in self.applied]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    server = fakeredis.FakeServer()
    yield fakeredis.FakeRedis(server=server)


@pytest.fixture
def kicks() -> list[int]:
    return []


@pytest.fixture
def inbox(client: redis.Redis, kicks: list[int]) -> Inbox:
    return Inbox(client, shards=1, kick=kicks.append)


def test_events_are_applied_in_order_and_leave_nothing_behind(
    inbox: Inbox, client: redis.Redis, kicks: list[int]
) -> None:
    inbox.put([ProviderEvent("a", 1, AttemptStatus.RINGING, 1.0), ended("a", 1.0)])
    for name in "bcd":
        inbox.put([ended(name)])
    assert kicks == [0]  # one drain for the shard, however many events wait
    recorder = Recorder()
    done = inbox.drain(0, recorder)
    assert recorder.calls == ["a", "b", "c", "d"]
    assert [e.status for e in recorder.applied[0]] == [AttemptStatus.RINGING, AttemptStatus.ENDED]
    assert (done.events, done.dropped, done.more) == (5, 0, False)
    assert client.xlen(event_stream(0)) == 0
    assert client.xpending(event_stream(0), GROUP)["pending"] == 0
    assert not client.exists(event_drain_flag(0))
    inbox.put([ended("e")])
    assert kicks == [0, 0]  # the flag was given back: the next event sends a new drain


def test_what_a_dead_drain_read_is_applied_first_by_the_next(inbox: Inbox, client: redis.Redis) -> None:
    for name in "ab":
        inbox.put([ended(name)])
    client.xgroup_create(event_stream(0), GROUP, id="0")
    client.xreadgroup(GROUP, CONSUMER, {event_stream(0): ">"})  # read, then the process died
    inbox.put([ended("c")])
    recorder = Recorder()
    inbox.drain(0, recorder)
    assert recorder.calls == ["a", "b", "c"]
    assert client.xlen(event_stream(0)) == 0


def test_more_pending_entries_than_one_read_holds_are_all_applied_before_new_ones(
    inbox: Inbox, client: redis.Redis
) -> None:
    held = [f"held-{i:03d}" for i in range(inbox_mod.READ_COUNT * 2 + 5)]
    for name in held:
        inbox.put([ended(name)])
    client.xgroup_create(event_stream(0), GROUP, id="0")
    client.xreadgroup(GROUP, CONSUMER, {event_stream(0): ">"})  # read, then the process died
    new = [f"new-{i:03d}" for i in range(inbox_mod.READ_COUNT + 3)]
    for name in new:
        inbox.put([ended(name)])
    recorder = Recorder()
    inbox.drain(0, recorder)
    assert recorder.calls == held + new
    assert client.xlen(event_stream(0)) == 0
    assert client.xpending(event_stream(0), GROUP)["pending"] == 0


def test_a_transient_error_keeps_the_event_for_the_next_drain(inbox: Inbox, client: redis.Redis) -> None:
    for name in "abc":
        inbox.put([ended(name)])
    recorder = Recorder()

    def flaky(events: list[ProviderEvent]) -> str | None:
        if events[0].call_id == "b" and not flaky.failed:  # type: ignore[attr-defined]
            flaky.failed = True  # type: ignore[attr-defined]
            raise redis.ConnectionError("Redis went away")
        return recorder(events)

    flaky.failed = False  # type: ignore[attr-defined]
    flushed: list[list[str]] = []
    with pytest.raises(redis.ConnectionError):
        inbox.drain(0, flaky, lambda: flushed.append(recorder.calls))
    assert recorder.calls == ["a"]
    assert flushed == [["a"]]  # what was applied has its Redis work done before the error
    assert client.xlen(event_stream(0)) == 2  # "a" acknowledged and deleted; "b" and "c" kept
    inbox.drain(0, flaky, lambda: flushed.append(recorder.calls))  # the task's retry
    assert recorder.calls == ["a", "b", "c"]
    assert flushed[-1] == ["a", "b", "c"]
    assert client.xlen(event_stream(0)) == 0


def test_a_malformed_or_failing_entry_is_dropped_and_the_rest_applied(inbox: Inbox, client: redis.Redis) -> None:
    inbox.put([ended("a")])
    client.xadd(event_stream(0), {"e": "not json"})
    inbox.put([ended("boom")])
    inbox.put([ended("c")])
    recorder = Recorder()

    def apply(events: list[ProviderEvent]) -> str | None:
        if events[0].call_id == "boom":
            raise ValueError("a bug")
        return recorder(events)

    done = inbox.drain(0, apply)
    assert recorder.calls == ["a", "c"]
    assert done.dropped == 2
    assert client.xlen(event_stream(0)) == 0  # neither is read again


def test_a_drain_stops_at_its_budget_and_sends_its_successor(
    inbox: Inbox, client: redis.Redis, kicks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_mod, "DRAIN_MAX_EVENTS", 7)
    monkeypatch.setattr(inbox_mod, "READ_COUNT", 5)
    for i in range(12):
        inbox.put([ended(f"c{i:02}")])
    recorder = Recorder()
    first = inbox.drain(0, recorder)
    assert (first.events, first.more) == (7, True)
    assert kicks == [0, 0]  # its successor
    assert client.exists(event_drain_flag(0))  # still held: puts meanwhile send no third drain
    second = inbox.drain(0, recorder)
    assert (second.events, second.more) == (5, False)
    assert recorder.calls == [f"c{i:02}" for i in range(12)]


def test_an_event_added_as_the_drain_gives_up_its_flag_is_not_stranded(
    inbox: Inbox, kicks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox.put([ended("a")])
    original, raced = Inbox._ack, False

    def ack_then_race(
        self: Inbox, shard: int, ids: list[bytes], read_from: str | None = None
    ) -> tuple[list[inbox_mod.Entry], bool]:
        nonlocal raced
        entries, pending = original(self, shard, ids, read_from)
        if not raced:
            # The empty read after "a" (with its acknowledgement): an event arrives, and its
            # put finds the flag still set.
            assert entries == []
            self.put([ended("late")])
            raced = True
        return entries, pending

    monkeypatch.setattr(Inbox, "_ack", ack_then_race)
    recorder = Recorder()
    inbox.drain(0, recorder)
    assert recorder.calls == ["a", "late"]
    assert kicks == [0]


def test_the_sweep_sends_a_drain_only_where_events_wait_and_none_runs(client: redis.Redis, kicks: list[int]) -> None:
    inbox = Inbox(client, shards=4, kick=kicks.append)
    ids = {shard_of(c, 4): c for c in (f"call-{i}" for i in range(40))}
    waiting, running = ids[0], ids[1]
    inbox.put([ended(waiting)])
    inbox.put([ended(running)])
    kicks.clear()
    client.delete(event_drain_flag(0))  # its drain task was lost and its flag expired
    assert inbox.sweep() == 1
    assert kicks == [0]  # shard 1 has a drain; shards 2 and 3 hold nothing


def test_a_kick_that_fails_gives_the_flag_back(client: redis.Redis) -> None:
    sent: list[int] = []

    def broker_down(shard: int) -> None:
        if not sent:
            sent.append(-1)
            raise redis.ConnectionError("broker down")
        sent.append(shard)

    inbox = Inbox(client, shards=1, kick=broker_down)
    with pytest.raises(redis.ConnectionError):
        inbox.put([ended("a")])
    inbox.put([ended("b")])
    assert sent == [-1, 0]
