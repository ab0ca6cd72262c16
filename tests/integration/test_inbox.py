"""The event inbox on real Redis, Postgres, worker processes and beat: an event that a drain
read and never acknowledged (its process died) is applied by the reconciler's next sweep."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from batchcalls.adapters.redis_keys import event_drain_flag, event_stream
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import AttemptStatus, Outcome
from config.settings import load_settings
from tests.integration.test_pipeline import number
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack
from workers.inbox import CONSUMER, GROUP, shard_of

pytestmark = pytest.mark.integration

CALL_SECONDS = 30  # the simulator's own end of the call comes long after the test's


@pytest.fixture(scope="module")
def long_calls(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        stack = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("inbox")),
            BATCHCALLS_SIM_CALL_SECONDS=str(CALL_SECONDS),
        )
        try:
            yield stack
        finally:
            stack.stop()


def _answered(stack: Stack, batch_id: str) -> dict[str, object]:
    deadline = time.time() + 30
    while time.time() < deadline:
        call = stack.all_calls(batch_id)[0]
        if call["status"] == "in_progress":
            return call
        time.sleep(0.1)
    raise AssertionError(f"the call was not answered: {call}")


def test_an_event_a_dead_drain_read_is_applied_by_the_next_sweep(long_calls: Stack) -> None:
    stack = long_calls
    body = {"calls": [{"phone_number": number(910, 0), "script": {"text": "Hi"}}], "concurrency": 1}
    batch_id = stack.submit(body)["batch_id"]
    call = _answered(stack, batch_id)
    call_id = str(call["id"])

    # The call's end is read by a drain that dies before applying it, and its flag expires.
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    shard = shard_of(call_id, load_settings(stack.env).event_shards)
    uuid = next(c["uuid"] for c in stack.sim_creates() if c["call_id"] == call_id)
    event = ProviderEvent(call_id, 1, AttemptStatus.ENDED, time.time(), Outcome.COMPLETED, uuid)
    key = event_stream(shard)
    try:
        client.xgroup_create(key, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        assert "BUSYGROUP" in str(exc)
    with client.pipeline(transaction=True) as dead_drain:  # no drain sees the entry unread
        dead_drain.xadd(key, {"e": json.dumps([event.to_message()])})
        dead_drain.xreadgroup(GROUP, CONSUMER, {key: ">"})
        dead_drain.delete(event_drain_flag(shard))
        _, read, _ = dead_drain.execute()
    assert [fields[b"e"] for _, fields in read[0][1]] == [json.dumps([event.to_message()]).encode()]
    ended_at = time.time()

    final = stack.wait_finished(batch_id, timeout=CALL_SECONDS / 2)
    assert final["completed_calls"] == 1
    print(f"\nthe event was applied {time.time() - ended_at:.1f} s after its drain died")
    assert client.xlen(key) == 0
    assert client.xpending(key, GROUP)["pending"] == 0
