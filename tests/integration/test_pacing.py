"""Who dials next under the provider's calls-per-second limit, on the real stack (worker
processes, Redis, Postgres, the simulator at 5 creations per second): an urgent batch goes ahead
of a big one already dialing, and a second tenant shares the limit with the first instead of
waiting behind every call the first was given. Assertions are about the order of creations in
the simulator's log, never about durations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from batchcalls.adapters.store.tenants import create_key, set_tenant_policy
from batchcalls.engine.dialing import CPS_TOLERANCE
from tests.integration.test_pipeline import number
from tests.support.servers import TestServers, more_test_servers
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

LIMIT = 5


@pytest.fixture(scope="module")
def paced(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with more_test_servers(servers) as own:
        stack = start_stack(
            own.database_url,
            own.redis_url,
            Path(tmp_path_factory.mktemp("pacing")),
            BATCHCALLS_SIM_CPS=str(LIMIT),
            BATCHCALLS_SIM_RING_SECONDS="0.1",
            BATCHCALLS_SIM_CALL_SECONDS="1",
        )
        try:
            yield stack
        finally:
            stack.stop()


def body(calls: int, concurrency: int, first: int, **extra: Any) -> dict[str, Any]:
    return {
        "calls": [{"phone_number": number(first + i, 0), "script": {"text": "Hi"}} for i in range(calls)],
        "concurrency": concurrency,
        **extra,
    }


def created(stack: Stack, at_least: int) -> list[str]:
    """The call ids in the order the simulator created them, once it created `at_least`."""
    deadline = time.time() + 60
    while len(order := [c["call_id"] for c in sorted(stack.sim_creates(), key=lambda c: c["at"])]) < at_least:
        assert time.time() < deadline, f"only {len(order)} calls created"
        time.sleep(0.05)
    return order


def ids(stack: Stack, batch_id: str) -> set[str]:
    return {str(c["id"]) for c in stack.all_calls(batch_id)}


def submit_as(stack: Stack, api_key: str, payload: dict[str, Any]) -> str:
    response = requests.post(
        f"{stack.api_url}/v1/batches", json=payload, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
    )
    assert response.status_code == 202, response.text
    return str(response.json()["batch_id"])


def test_an_urgent_batch_dials_at_the_next_turns_ahead_of_a_big_one(paced: Stack) -> None:
    stack = paced
    before = len(stack.sim_creates())
    big = stack.submit(body(60, 30, 100_000))["batch_id"]
    created(stack, before + LIMIT)  # the big batch is dialing, its 30 slots wanting turns
    urgent = stack.submit(body(5, 5, 200_000, priority=0))["batch_id"]
    answered = len(stack.sim_creates()) - before
    urgent_ids = ids(stack, urgent)
    stack.wait_finished(urgent)
    order = created(stack, before + LIMIT + 5)[before:]
    first = min(order.index(c) for c in urgent_ids)
    # The urgent batch's first call is created at one of the next turns (a few creations of
    # the big batch may have been on their way), not behind the 30 calls the big batch holds
    # slots for; then its calls are created one after another.
    assert first - answered <= 5, (first, answered)
    window = order[first : first + 6]
    assert len(urgent_ids & set(window)) == 5, window
    assert stack.status(big)["finished_at"] is None  # it was still dialing: the turns were contested
    stack.wait_finished(big, timeout=120)


def finished_as(stack: Stack, api_key: str, batch_id: str) -> bool:
    response = requests.get(
        f"{stack.api_url}/v1/batches/{batch_id}", headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["finished_at"] is not None


def test_a_second_tenant_shares_the_turns_with_a_tenant_already_dialing(paced: Stack) -> None:
    stack = paced
    _, first_key = create_key(stack.db, "pacing-first-" + str(time.time_ns()))
    before = len(stack.sim_creates())
    first = submit_as(stack, first_key, body(60, 30, 300_000))
    created(stack, before + LIMIT)
    second = stack.submit(body(10, 5, 400_000))["batch_id"]
    answered = len(stack.sim_creates()) - before
    stack.wait_finished(second)
    second_ids = ids(stack, second)
    order = created(stack, before + LIMIT + 10)[before:]
    span = [i for i, c in enumerate(order) if c in second_ids]
    assert span[0] - answered <= 5, (span[0], answered)
    during = order[span[0] : span[-1] + 1]
    # While the second tenant had calls waiting, it had about every other turn; before pacing
    # it waited behind the 30 calls the first tenant was given and then for its own turns.
    share = sum(1 for c in during if c in second_ids) / len(during)
    assert share >= 0.4, (share, len(during))
    assert not finished_as(stack, first_key, first)
    deadline = time.time() + 120
    while not finished_as(stack, first_key, first):
        assert time.time() < deadline, "the first tenant's batch did not finish"
        time.sleep(0.2)


def test_a_tenants_ceilings_hold_across_its_batches_while_others_use_the_rest(paced: Stack) -> None:
    stack = paced
    name = "pacing-capped-" + str(time.time_ns())
    capped, capped_key = create_key(stack.db, name)
    set_tenant_policy(stack.db, name, {"max_calls_per_second": 1, "max_concurrent_calls": 2})
    before = len(stack.sim_creates())
    mine = [submit_as(stack, capped_key, body(4, 10, 500_000 + 10 * i)) for i in range(2)]
    others = stack.submit(body(20, 20, 600_000))["batch_id"]
    stack.wait_finished(others)
    deadline = time.time() + 120
    while not all(finished_as(stack, capped_key, b) for b in mine):
        assert time.time() < deadline, "the capped tenant's batches did not finish"
        time.sleep(0.2)
    with stack.db.transaction() as cur:
        cur.execute(
            "SELECT c.id, a.dialed_at, a.ended_at FROM attempts a JOIN calls c ON c.id = a.call_id"
            " JOIN batches b ON b.id = c.batch_id WHERE b.tenant_id = %s",
            (capped.id,),
        )
        attempts = cur.fetchall()
    assert len(attempts) == 8
    # Never more than 2 of the tenant's calls live at once, across its two batches ...
    edges = sorted([(a["dialed_at"], 1) for a in attempts] + [(a["ended_at"], -1) for a in attempts])
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    assert peak <= 2
    # ... and never two of its creations within a second, while the other tenant went faster.
    mine_ids = {str(a["id"]) for a in attempts}
    creates = stack.sim_creates()[before:]
    own_times = sorted(c["at"] for c in creates if c["call_id"] in mine_ids)
    # The ceiling spaces the tenant's creation instants by a second and more; a create may come
    # up to the engine's tolerance (30 ms) after its instant, so creates are spaced by at least
    # a second less that.
    assert min(b - a for a, b in zip(own_times, own_times[1:], strict=False)) >= 1.0 - CPS_TOLERANCE
    other_times = sorted(c["at"] for c in creates if c["call_id"] not in mine_ids)
    assert len(other_times) == 20
    assert max(sum(1 for t in other_times if s <= t < s + 1.0) for s in other_times) >= 2
