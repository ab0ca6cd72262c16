"""Fault drill: pause, resume and cancel under the worker kills of drill 1.

Two batches of 300 calls at concurrency 20 run at once. While a random worker is SIGKILLed every
few seconds (and replaced), one batch is paused and later resumed, the other is cancelled with
`hangup_live_calls`. Then, for each batch, the invariants of DESIGN §4 and of issue 15 are
measured from Postgres and the simulator's logs: no attempt dialed twice, never more calls live
than the concurrency, no create between the pause's answer and the resume, none after the
cancel's answer, every call final once with counts that add up, exactly one terminal event
(written once, delivered), and the paused batch's outcomes as the simulator's table says."""

from __future__ import annotations

import collections
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.drills.harness import (
    FAILED,
    REPORTED,
    System,
    _read_jsonl,
    batch_body,
    start_system,
    wrong_outcome,
)

pytestmark = [pytest.mark.drill, pytest.mark.timeout(600)]

TERMINAL = ("batch.completed", "batch.failed", "batch.cancelled")
FINAL = ("completed", "failed", "cancelled")


@pytest.fixture
def system(request: pytest.FixtureRequest) -> Iterator[System]:
    running = start_system()
    try:
        yield running
    finally:
        running.stop(keep_logs=request.node.stash.get(FAILED, True))


def _command(
    system: System, batch_id: str, name: str, body: dict[str, Any] | None = None
) -> tuple[dict[str, Any], float]:
    """Send a command, retried while the kills make the answer a 503 (`Unavailable`)."""
    deadline = time.time() + 60
    while True:
        response = requests.post(
            f"{system.api_url}/v1/batches/{batch_id}/{name}", json=body, headers=system.headers(), timeout=60
        )
        if response.status_code != 503 or time.time() > deadline:
            break
        time.sleep(0.5)
    answered = time.time()
    assert response.status_code == 200, response.text
    return response.json(), answered


def _wait(condition: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.time() + timeout
    while not (value := condition()):
        assert time.time() < deadline, f"{what} not seen within {timeout}s"
        time.sleep(0.2)
    return value


def _figures(system: System, batch_id: str) -> dict[str, Any]:
    """One batch's invariants, measured once its attempts have all ended."""

    def rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], list[str]] | None:
        with system._db() as cur:
            cur.execute("SELECT * FROM calls WHERE batch_id = %s", (batch_id,))
            calls = list(cur.fetchall())
            cur.execute(
                "SELECT a.* FROM attempts a JOIN calls c ON c.id = a.call_id WHERE c.batch_id = %s", (batch_id,)
            )
            attempts = list(cur.fetchall())
            cur.execute("SELECT * FROM batches WHERE id = %s", (batch_id,))
            batch = cur.fetchone()
            cur.execute("SELECT type FROM events WHERE batch_id = %s", (batch_id,))
            types = [row["type"] for row in cur.fetchall()]
        if batch["finished_at"] is None or any(a["ended_at"] is None for a in attempts):
            return None
        return calls, attempts, batch, types

    system.wait_finished(batch_id)
    calls, attempts, batch, types = _wait(rows, "every attempt of the batch ended")
    creates = collections.Counter(
        (c["call_id"], c["attempt"])
        for c in _read_jsonl(Path(system.env["BATCHCALLS_SIM_LOG"]))
        if c["call_id"] in {call["id"] for call in calls}
    )
    edges = sorted(
        [(a["dialed_at"].timestamp(), 1) for a in attempts] + [(a["ended_at"].timestamp(), -1) for a in attempts]
    )
    live = max_live = 0
    for _, step in edges:
        live += step
        max_live = max(max_live, live)
    by_status = collections.Counter(call["status"] for call in calls)
    delivered = _wait(
        lambda: [e for e in system.receiver.events(batch_id) if e["type"] in TERMINAL],
        "the terminal event's delivery",
    )
    return {
        "batch": batch,
        "calls": calls,
        "attempts": attempts,
        "status": batch["status"],
        "double_dials": sum(n - 1 for n in creates.values() if n > 1),
        "undeclared_dials": len(set(creates) - {(a["call_id"], a["number"]) for a in attempts}),
        "max_live": max_live,
        "not_final": sum(n for status, n in by_status.items() if status not in FINAL),
        "counts_add_up": (
            batch["completed_calls"] == by_status["completed"]
            and batch["failed_calls"] == by_status["failed"]
            and batch["cancelled_calls"] == by_status["cancelled"]
            and sum(by_status.values()) == batch["total_calls"] == len(calls)
        ),
        "terminal_written": [t for t in types if t in TERMINAL],
        "terminal_delivered": sorted({e["id"] for e in delivered}),
    }


def _line(name: str, figures: dict[str, Any], **extra: Any) -> str:
    batch = figures["batch"]
    shown = {
        "status": figures["status"],
        "completed": batch["completed_calls"],
        "failed": batch["failed_calls"],
        "cancelled": batch["cancelled_calls"],
        "double_dials": figures["double_dials"],
        "max_live": f"{figures['max_live']}/{batch['concurrency']}",
        "terminal_events": len(figures["terminal_written"]),
        **extra,
    }
    return f"drill={name} " + " ".join(f"{k}={v}" for k, v in shown.items())


def _assert_invariants(figures: dict[str, Any]) -> None:
    assert figures["double_dials"] == 0 and figures["undeclared_dials"] == 0
    assert figures["max_live"] <= figures["batch"]["concurrency"]
    assert figures["not_final"] == 0 and figures["counts_add_up"]
    assert len(figures["terminal_written"]) == 1 and len(figures["terminal_delivered"]) == 1


def test_drill_8_pause_resume_and_cancel_while_workers_are_killed(system: System) -> None:
    paused_id = system.submit(batch_body(system.receiver.url))
    cancelled_id = system.submit(batch_body(system.receiver.url, offset=1000))
    system.wait_progress(paused_id, 20)
    rng, kills = random.Random(8), 0

    def kill_one() -> None:
        nonlocal kills
        system.kill(rng.choice(system.workers()))
        system.start_worker(f"w-{uuid.uuid4().hex[:6]}")
        kills += 1

    kill_one()
    _, paused_at = _command(system, paused_id, "pause")
    time.sleep(2.5)  # the kills' pace, as in drill 1
    kill_one()
    _, cancelled_at = _command(system, cancelled_id, "cancel", {"hangup_live_calls": True})
    kill_one()  # while the hangups run in the workers
    time.sleep(2.5)
    kill_one()
    resume_sent = time.time()
    resumed, _ = _command(system, paused_id, "resume")
    assert resumed["status"] in ("running", "queued")
    broke_at = time.time()
    while system.progress(paused_id) < 300 and time.time() - broke_at < 120:
        time.sleep(2.5)
        kill_one()
    paused = _figures(system, paused_id)
    cancelled = _figures(system, cancelled_id)
    sim = _read_jsonl(Path(system.env["BATCHCALLS_SIM_LOG"]))
    paused_calls = {c["id"] for c in paused["calls"]}
    cancelled_calls = {c["id"] for c in cancelled["calls"]}
    during_pause = [c for c in sim if c["call_id"] in paused_calls and paused_at <= c["at"] <= resume_sent]
    after_cancel = [c for c in sim if c["call_id"] in cancelled_calls and c["at"] >= cancelled_at]
    per_call = collections.defaultdict(list)
    for attempt in paused["attempts"]:
        per_call[attempt["call_id"]].append(attempt)
    wrong = [
        why
        for call in paused["calls"]
        if (why := wrong_outcome(call, per_call[call["id"]], paused["batch"]["retry_config"], system.worker_kills))
    ]
    for line in (
        _line("8-pause-resume-under-kills", paused, creates_while_paused=len(during_pause), wrong=len(wrong)),
        _line("8-cancel-under-kills", cancelled, creates_after_cancel=len(after_cancel), kills=kills),
    ):
        print("\n" + line)
        REPORTED.append(line)
    assert kills >= 4
    _assert_invariants(paused)
    _assert_invariants(cancelled)
    assert during_pause == [] and after_cancel == []
    assert wrong == [], wrong[:5]
    assert paused["status"] in ("completed", "failed") and paused["terminal_written"][0] == f"batch.{paused['status']}"
    assert cancelled["status"] == "cancelled" and cancelled["terminal_written"] == ["batch.cancelled"]
