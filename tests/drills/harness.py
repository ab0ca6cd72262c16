"""A whole system that a drill may break: its own PostgreSQL and Redis (embedded, on fixed ports
so they can be restarted under their clients), the API under gunicorn, three Celery worker
processes and beat, all as subprocesses, and a callback receiver.

After the break the drill waits for the batch to finish and measures the invariants of DESIGN §4
from Postgres, the simulator's log of creations and the receiver's log, and checks each call's
outcome against the simulator's last-digit table (DESIGN §6). While it waits, a worker, beat or
API process that exited without the drill killing it fails the drill at once, with its log."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
import redis
import requests

from batchcalls.adapters.queues import CALLS_QUEUE, DELIVERY_QUEUE
from batchcalls.adapters.store.db import Database, close_pools
from batchcalls.adapters.store.migrate import upgrade
from batchcalls.adapters.store.tenants import create_key
from batchcalls.ops.embedded import EmbeddedServer, start_postgres, start_redis
from tests.support.receiver import Receiver, start_receiver
from tests.support.stack import ROOT, TEST_ENV

DRILL_ENV = {
    **TEST_ENV,
    "BATCHCALLS_SIM_RING_SECONDS": "0.2",
    "BATCHCALLS_SIM_CALL_SECONDS": "0.3",
    "BATCHCALLS_LEASE_SECONDS": "6",
    "BATCHCALLS_STALE_ATTEMPT_SECONDS": "2",
}
CALLS, CONCURRENCY = 300, 20
# Mostly answered; some busy once (4), always busy (1) and unanswered (2): retries are exercised.
DIGITS = [0, 7, 8, 9, 4, 0, 1, 9, 2, 8]


REPORTED: list[str] = []  # each drill's figures, shown in the run's summary
# Set on each drill test by conftest: whether its call failed (a failed drill keeps its logs).
FAILED = pytest.StashKey[bool]()


def number(i: int) -> str:
    return f"+4420794{i % 1000:03d}{(i // 1000) % 10}{DIGITS[i % len(DIGITS)]}"


def batch_body(callback_url: str, offset: int = 0) -> dict[str, Any]:
    return {
        "calls": [{"phone_number": number(offset + i), "script": {"text": f"Drill call {i}"}} for i in range(CALLS)],
        "concurrency": CONCURRENCY,
        "callback_url": callback_url,
        "retry_config": {"max_attempts": 2, "delay": 0.5, "retry_on": ["busy", "no_answer"]},
    }


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


# DESIGN §6, the simulator's outcome of every attempt by the number's last digit (4: busy on the
# first attempt, answered after); any other digit is answered by a person and completed.
TABLE = {"1": "busy", "2": "no_answer", "3": "failed", "5": "machine", "6": "rejected"}
# What the reconciler writes on an attempt whose result nobody knows (README, Reliability).
UNKNOWN_RESULT = ("the provider never confirmed this call", "no provider event for")
# An attempt recorded this long before (or after, by clock skew) a worker was killed may have
# lost its worker between recording and hearing back.
KILL_WINDOW = (-10.0, 1.0)


def table_outcome(phone_number: str, attempt: int) -> str:
    digit = phone_number[-1]
    if digit == "4":
        return "busy" if attempt == 1 else "completed"
    return TABLE.get(digit, "completed")


def wrong_outcome(
    call: dict[str, Any], attempts: list[dict[str, Any]], retry_config: dict[str, Any], worker_kills: list[float]
) -> str | None:
    """Why this call's attempts or final state differ from what the table and the batch's retry
    policy make of its number, or None when they agree. The one documented exception: an attempt
    whose worker was killed between recording it and hearing back may end `failed` (it is not
    dialed again; the retry policy goes on from there)."""
    max_attempts = int(retry_config.get("max_attempts", 1))
    retry_on = retry_config.get("retry_on", ["busy", "no_answer", "failed"])
    attempts = sorted(attempts, key=lambda a: a["number"])
    if [a["number"] for a in attempts] != list(range(1, len(attempts) + 1)) or not attempts:
        return f"attempts numbered {[a['number'] for a in attempts]}"
    for i, attempt in enumerate(attempts):
        expected = table_outcome(call["phone_number"], attempt["number"])
        if attempt["status"] != "ended":
            return f"attempt {attempt['number']} is {attempt['status']}"
        if attempt["outcome"] != expected and not _excused(attempt, worker_kills):
            return f"attempt {attempt['number']} ended {attempt['outcome']}, not {expected} ({attempt['error']})"
        retried = attempt["outcome"] in retry_on and attempt["number"] < max_attempts
        if retried != (i < len(attempts) - 1):
            return f"attempt {attempt['number']} ended {attempt['outcome']} and was " + (
                "not retried" if retried else "retried"
            )
    outcome = attempts[-1]["outcome"]
    status = "completed" if outcome == "completed" else "failed"
    if (call["outcome"], call["status"]) != (outcome, status):
        return f"call is {call['status']}/{call['outcome']} after a last attempt that ended {outcome}"
    return None


def _excused(attempt: dict[str, Any], worker_kills: list[float]) -> bool:
    dialed = attempt["dialed_at"].timestamp()
    return (
        attempt["outcome"] == "failed"
        and (attempt["error"] or "").startswith(UNKNOWN_RESULT)
        and any(KILL_WINDOW[0] <= dialed - killed <= KILL_WINDOW[1] for killed in worker_kills)
    )


@dataclass
class Figures:
    drill: str
    calls: int
    final: int
    completed: int
    failed: int
    wrong_outcomes: int  # calls whose outcome the simulator's table does not explain
    excused: int  # calls that ended failed after their worker was killed mid-attempt (allowed)
    double_dials: int
    undeclared_dials: int
    max_live: int
    concurrency: int
    terminal_events: int
    events_lost: int
    recover_seconds: float
    total_seconds: float

    def line(self) -> str:
        return (
            f"drill={self.drill} calls={self.calls} final={self.final} (completed={self.completed} "
            f"failed={self.failed}) wrong_outcomes={self.wrong_outcomes}"
            + (f" (excused={self.excused})" if self.excused else "")
            + f" double_dials={self.double_dials} max_live={self.max_live}/"
            f"{self.concurrency} terminal_events={self.terminal_events} events_lost={self.events_lost} "
            f"recover_s={self.recover_seconds:.1f} total_s={self.total_seconds:.1f}"
        )

    def assert_invariants(self) -> None:
        assert self.final == self.calls, self.line()
        assert self.wrong_outcomes == 0, self.line()
        assert self.double_dials == 0 and self.undeclared_dials == 0, self.line()
        assert self.max_live <= self.concurrency, self.line()
        assert self.terminal_events == 1, self.line()
        assert self.events_lost == 0, self.line()


@dataclass
class System:
    workdir: Path
    env: dict[str, str]
    postgres: EmbeddedServer
    redis_server: EmbeddedServer
    pg_port: int
    redis_port: int
    receiver: Receiver
    api_key: str
    api_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_kills: list[float] = field(default_factory=list)  # when the drill killed a worker

    # -- processes ----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_worker(self, name: str, concurrency: int = 2, queues: str | None = None) -> None:
        """A Celery worker process; without `queues` it consumes every queue, deliveries included,
        so that the drills that kill workers kill the processes that deliver too."""
        self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.tasks",
                "worker",
                "--concurrency",
                str(concurrency),
                "-n",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "INFO",
                *(["--queues", queues] if queues else []),
            ],
        )

    def start_beat(self) -> None:
        self._spawn(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.tasks",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.workdir / "beat-schedule"),
            ],
        )

    def start_api(self) -> None:
        self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{self.api_port}",
                "--workers",
                "2",
                "api.app:create_app()",
            ],
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(f"{self.api_url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError("the API did not start")

    def kill(self, name: str) -> None:
        self.check_processes()  # a process that died by itself is a finding, not a kill
        proc = self.procs.pop(name)
        if name.startswith("w"):
            self.worker_kills.append(time.time())
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def check_processes(self) -> None:
        """Fail when a process the drill did not kill has exited on its own (a worker's
        'Unrecoverable error', beat or gunicorn giving up), with the end of its log."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                raise AssertionError(
                    f"{name} (pid {proc.pid}) exited by itself with code {code}; end of "
                    f"{self.workdir / (name + '.log')}:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def workers(self) -> list[str]:
        return [name for name in self.procs if name.startswith("w")]

    def restart_redis(self, flush_first: bool = False) -> None:
        if flush_first:
            redis.Redis.from_url(self.redis_server.url).flushall()  # the drill's own server
        self.redis_server.stop()
        self.redis_server = start_redis(self.workdir / "servers", port=self.redis_port)

    def restart_postgres(self, down_seconds: float = 2.0) -> None:
        self.postgres.stop()
        time.sleep(down_seconds)
        self.postgres = start_postgres(self.workdir / "servers", port=self.pg_port)

    def stop(self, keep_logs: bool = True) -> None:
        """Stop every process and server; without `keep_logs` (the drill passed) remove its
        directory too: logs and an embedded PostgreSQL cluster, about 40 MB a drill."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.receiver.stop()
        close_pools()
        self.redis_server.stop()
        self.postgres.stop()
        if not keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- API ----------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> str:
        headers = self.headers() | ({"Idempotency-Key": idempotency_key} if idempotency_key else {})
        response = requests.post(f"{self.api_url}/v1/batches", json=body, headers=headers, timeout=60)
        assert response.status_code == 202, response.text
        return str(response.json()["batch_id"])

    def wait_finished(self, batch_id: str, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_processes()
            with self._db() as cur:
                cur.execute("SELECT finished_at FROM batches WHERE id = %s", (batch_id,))
                row = cur.fetchone()
            if row and row["finished_at"] is not None:
                return
            time.sleep(0.3)
        raise AssertionError(f"batch {batch_id} did not finish in {timeout}s; logs in {self.workdir}")

    def progress(self, batch_id: str) -> int:
        self.check_processes()
        with self._db() as cur:
            cur.execute("SELECT completed_calls + failed_calls AS done FROM batches WHERE id = %s", (batch_id,))
            return int(cur.fetchone()["done"])

    def wait_progress(self, batch_id: str, done: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while self.progress(batch_id) < done:
            if time.time() > deadline:
                raise AssertionError(f"batch {batch_id} made no progress to {done} calls")
            time.sleep(0.1)

    def _events_owed(self, batch_id: str) -> int:
        with self._db() as cur:
            cur.execute(
                "SELECT count(*) AS owed FROM events WHERE batch_id = %s AND delivered_at IS NULL AND given_up_at IS NULL",
                (batch_id,),
            )
            return int(cur.fetchone()["owed"])

    def _db(self) -> Any:
        return _Cursor(self.env["DATABASE_URL"])

    # -- measuring ----------------------------------------------------------------------------

    def measure(self, drill: str, batch_id: str, broke_at: float, started_at: float, event_wait: float = 90) -> Figures:
        """Wait for the batch's terminal event, then measure every invariant."""
        self.wait_finished(batch_id)
        deadline = time.time() + event_wait
        while time.time() < deadline and not any(
            e["type"] in ("batch.completed", "batch.failed") for e in self.receiver.events(batch_id)
        ):
            self.check_processes()
            time.sleep(0.2)
        # A late duplicate could only come from an event still owed: once every event of the batch
        # is marked delivered or given up, the outbox has nothing left to send.
        while time.time() < deadline and self._events_owed(batch_id):
            self.check_processes()
            time.sleep(0.2)
        self.check_processes()
        with self._db() as cur:
            cur.execute("SELECT id, status, outcome, phone_number FROM calls WHERE batch_id = %s", (batch_id,))
            rows = {row["id"]: row for row in cur.fetchall()}
            calls = {call_id: row["status"] for call_id, row in rows.items()}
            cur.execute(
                "SELECT a.* FROM attempts a JOIN calls c ON c.id = a.call_id WHERE c.batch_id = %s", (batch_id,)
            )
            attempts = list(cur.fetchall())
            cur.execute("SELECT * FROM batches WHERE id = %s", (batch_id,))
            batch = cur.fetchone()
        per_call: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for attempt in attempts:
            per_call[attempt["call_id"]].append(attempt)
        wrong = {
            call_id: wrong_outcome(row, per_call[call_id], batch["retry_config"], self.worker_kills)
            for call_id, row in rows.items()
        }
        wrong = {call_id: why for call_id, why in wrong.items() if why is not None}
        for call_id, why in sorted(wrong.items())[:10]:
            print(f"wrong outcome: {call_id} {rows[call_id]['phone_number']}: {why}")
        excused = sum(
            any(a["outcome"] != table_outcome(rows[call_id]["phone_number"], a["number"]) for a in per_call[call_id])
            for call_id in set(rows) - set(wrong)
        )
        creates = collections.Counter(
            (c["call_id"], c["attempt"])
            for c in _read_jsonl(Path(self.env["BATCHCALLS_SIM_LOG"]))
            if c["call_id"] in calls
        )
        recorded = {(a["call_id"], a["number"]) for a in attempts}
        edges = sorted(
            [(a["dialed_at"].timestamp(), 1) for a in attempts]
            + [(a["ended_at"].timestamp(), -1) for a in attempts if a["ended_at"]],
            key=lambda e: (e[0], e[1]),
        )
        live = max_live = 0
        for _, step in edges:
            live += step
            max_live = max(max_live, live)
        dials_after = [a["dialed_at"].timestamp() for a in attempts if a["dialed_at"].timestamp() > broke_at]
        events = self.receiver.events(batch_id)
        reported = {e["data"]["id"] for e in events if e["type"].startswith("batch.call_")}
        final = sum(status in ("completed", "failed") for status in calls.values())
        counted = batch["completed_calls"] + batch["failed_calls"]
        return Figures(
            drill=drill,
            calls=len(calls),
            final=final if counted == final else -1,
            completed=batch["completed_calls"],
            failed=batch["failed_calls"],
            wrong_outcomes=len(wrong),
            excused=excused,
            double_dials=sum(n - 1 for n in creates.values() if n > 1),
            undeclared_dials=len(set(creates) - recorded),
            max_live=max_live,
            concurrency=batch["concurrency"],
            terminal_events=sum(e["type"] in ("batch.completed", "batch.failed") for e in events),
            events_lost=len(set(calls) - reported) + (0 if any(e["type"] == "batch.started" for e in events) else 1),
            recover_seconds=(min(dials_after) - broke_at) if dials_after else float("nan"),
            total_seconds=time.time() - started_at,
        )

    def chaos_done(self, batch_id: str) -> dict[str, int]:
        """How many of the batch's provider events the simulator's chaos lost, delayed, reordered
        and duplicated, and how many delayed ones were due after the call's next attempt dialed."""
        with self._db() as cur:
            cur.execute(
                "SELECT a.call_id, a.number, a.dialed_at FROM attempts a JOIN calls c ON c.id = a.call_id"
                " WHERE c.batch_id = %s",
                (batch_id,),
            )
            dialed = {(row["call_id"], row["number"]): row["dialed_at"].timestamp() for row in cur.fetchall()}
        done = {"lost": 0, "duplicated": 0, "delayed": 0, "reordered": 0, "delayed_past_next_attempt": 0}
        for line in _read_jsonl(self.workdir / "chaos.jsonl"):
            if (line["call_id"], line["attempt"]) not in dialed:
                continue
            for what in line["did"]:
                done[what] += 1
            next_dial = dialed.get((line["call_id"], line["attempt"] + 1))
            if "delayed" in line["did"] and next_dial is not None and line["due"] > next_dial:
                done["delayed_past_next_attempt"] += 1
        return done


class _Cursor:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def __enter__(self) -> Any:
        for attempt in range(60):  # the drill may be restarting Postgres under us
            try:
                self.conn = psycopg2.connect(self.dsn, connect_timeout=2)
                break
            except psycopg2.OperationalError:
                if attempt == 59:
                    raise
                time.sleep(0.5)
        self.conn.autocommit = True
        self.cur = self.conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        return self.cur

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_system(
    workers: int = 3, chaos: str | None = None, delivery_workers: int = 0, delivery_concurrency: int = 4, **env: str
) -> System:
    """`chaos` (BATCHCALLS_SIM_CHAOS's shares) makes the simulator's events misbehave, and has
    what it did recorded for `System.chaos_done`. With `delivery_workers`, the processes run as
    in production: workers `w<n>` handle calls only and workers `d<n>` deliver events only."""
    workdir = Path(tempfile.mkdtemp(prefix="bc-drill-"))
    os.chmod(workdir, 0o755)
    if chaos is not None:
        env = {**env, "BATCHCALLS_SIM_CHAOS": f"{chaos},log={workdir / 'chaos.jsonl'}"}
    pg = start_postgres(workdir / "servers")
    rd = start_redis(workdir / "servers")
    pg_port = int(pg.url.rsplit(":", 1)[1].split("/")[0])
    redis_port = int(rd.url.rsplit(":", 1)[1].split("/")[0])
    database_url, redis_url = pg.url, rd.url
    upgrade(database_url)
    tenant, api_key = create_key(Database(database_url), "drill")
    close_pools()
    full_env = {
        **os.environ,
        **DRILL_ENV,
        **env,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BATCHCALLS_SIM_LOG": str(workdir / "sim-creates.jsonl"),
        "PYTHONPATH": str(ROOT),
    }
    system = System(workdir, full_env, pg, rd, pg_port, redis_port, start_receiver(), api_key, _free_port())
    system.start_api()
    for i in range(workers):
        system.start_worker(f"w{i + 1}", queues=CALLS_QUEUE if delivery_workers else None)
    for i in range(delivery_workers):
        system.start_worker(f"d{i + 1}", concurrency=delivery_concurrency, queues=DELIVERY_QUEUE)
    system.start_beat()
    return system
