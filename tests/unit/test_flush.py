"""The Redis work applied events leave (`Gathered`) is never half lost: a flush that fails keeps
what it has not done, and a drain retries it before giving up."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
import redis

from batchcalls.engine import Engine, Gathered
from config.settings import Settings
from workers import tasks


def _engine() -> Engine:
    return Engine(
        Settings(database_url="postgresql://unused", redis_url="redis://unused"),
        db=mock.Mock(),
        gates=mock.Mock(),
        tasks=mock.Mock(),
    )


def _work() -> Gathered:
    work = Gathered()
    work.kick = {"b1": False, "b2": True}
    work.renew = {"b1": ["c1"]}
    work.release = {"b1": ["c2"], "b2": ["c3"]}
    work.finished = {"b2"}
    return work


def test_a_flush_that_fails_keeps_what_it_did_not_do_for_the_next() -> None:
    engine, work = _engine(), _work()
    dispatched: list[str] = []

    def dispatch(batch_id: str, release: Any, delay: Any, place_here: bool) -> tuple[int, None]:
        if batch_id == "b2" and "b2 failed" not in dispatched:
            dispatched.append("b2 failed")
            raise redis.ConnectionError("Redis went away")
        dispatched.append(batch_id)
        return 1, None

    with (
        mock.patch.object(Engine, "kick_delivery") as kick,
        mock.patch.object(Engine, "_dispatch", side_effect=dispatch),
    ):
        with pytest.raises(redis.ConnectionError):
            engine.flush_events(work)
        assert kick.call_count == 2 and work.kick == {} and work.renew == {}
        assert (work.release, work.finished) == ({"b2": ["c3"]}, {"b2"})
        engine.gates.forget.assert_not_called()  # not before its last release
        engine.flush_events(work)
        assert kick.call_count == 2  # nothing done twice
    assert dispatched == ["b1", "b2 failed", "b2"]
    engine.gates.forget.assert_called_once_with("b2")
    assert work == Gathered()


def test_the_drain_retries_a_failing_flush_and_raises_only_when_it_keeps_failing() -> None:
    engine, work = mock.Mock(), Gathered()
    engine.flush_events.side_effect = [redis.ConnectionError("away"), redis.TimeoutError("slow"), None]
    with mock.patch("redis.retry.sleep") as sleep:
        tasks._flush(engine, work, shard=3)
        assert engine.flush_events.call_count == 3 and sleep.call_count == 2
        engine.flush_events.reset_mock(side_effect=True)
        engine.flush_events.side_effect = redis.ConnectionError("still away")
        with pytest.raises(redis.ConnectionError):
            tasks._flush(engine, work, shard=3)
    assert engine.flush_events.call_count == tasks.FLUSH_RETRIES + 1


def test_the_drain_drops_work_that_fails_for_good_and_goes_on() -> None:
    engine, work = mock.Mock(), _work()
    engine.flush_events.side_effect = ValueError("a bug")
    tasks._flush(engine, work, shard=0)  # logged, not raised: the shard's drain goes on
    assert engine.flush_events.call_count == 1
    assert work == Gathered()
