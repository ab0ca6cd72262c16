"""A whole system that a drill may break: its own PostgreSQL and Redis (embedded, on fixed ports
so they can be restarted under their clients), the API under gunicorn, three Celery worker
processes and beat, all as subprocesses, and a callback receiver.

After the break the drill waits for the batch to finish and measures the invariants of DESIGN §4
from Postgres, the simulator's log of creations and the receiver's log."""

from __future__ import annotations

import collections
import os
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
import redis
import requests

from batchcalls.embedded import EmbeddedServer, start_postgres, start_redis
from batchcalls.store.db import Database, close_pools
from batchcalls.store.migrate import upgrade
from batchcalls.store.tenants import create_key
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


@dataclass
class Figures:
    drill: str
    calls: int
    final: int
    completed: int
    failed: int
    double_dials: int
    undeclared_dials: int
    max_live: int
    concurrency: int
    terminal_events: int
    events_lost: int
    recover_seconds: float
    total_seconds: float

    def line(self) -> str:
        return (f"drill={self.drill} calls={self.calls} final={self.final} (completed={self.completed} "
                f"failed={self.failed}) double_dials={self.double_dials} max_live={self.max_live}/"
                f"{self.concurrency} terminal_events={self.terminal_events} events_lost={self.events_lost} "
                f"recover_s={self.recover_seconds:.1f} total_s={self.total_seconds:.1f}")

    def assert_invariants(self) -> None:
        assert self.final == self.calls, self.line()
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

    # -- processes ----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def start_worker(self, name: str) -> None:
        self._spawn(name, [sys.executable, "-m", "celery", "-A", "workers.tasks", "worker", "--concurrency", "2",
                           "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "--loglevel", "INFO"])

    def start_beat(self) -> None:
        self._spawn("beat", [sys.executable, "-m", "celery", "-A", "workers.tasks", "beat", "--loglevel", "INFO",
                             "--schedule", str(self.workdir / "beat-schedule")])

    def start_api(self) -> None:
        self._spawn("api", [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.api_port}",
                            "--workers", "2", "api.app:create_app()"])
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(f"{self.api_url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError("the API did not start")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def workers(self) -> list[str]:
        return [name for name in self.procs if name.startswith("w")]

    def restart_redis(self, flush_first: bool = False) -> None:
        if flush_first:
            redis.Redis(port=self.redis_port).flushall()
        self.redis_server.stop()
        self.redis_server = start_redis(self.workdir / "servers", port=self.redis_port)

    def restart_postgres(self, down_seconds: float = 2.0) -> None:
        self.postgres.stop()
        time.sleep(down_seconds)
        self.postgres = start_postgres(self.workdir / "servers", port=self.pg_port)

    def stop(self) -> None:
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
            with self._db() as cur:
                cur.execute("SELECT finished_at FROM batches WHERE id = %s", (batch_id,))
                row = cur.fetchone()
            if row and row["finished_at"] is not None:
                return
            time.sleep(0.3)
        raise AssertionError(f"batch {batch_id} did not finish in {timeout}s; logs in {self.workdir}")

    def progress(self, batch_id: str) -> int:
        with self._db() as cur:
            cur.execute("SELECT completed_calls + failed_calls AS done FROM batches WHERE id = %s", (batch_id,))
            return int(cur.fetchone()["done"])

    def wait_progress(self, batch_id: str, done: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while self.progress(batch_id) < done:
            if time.time() > deadline:
                raise AssertionError(f"batch {batch_id} made no progress to {done} calls")
            time.sleep(0.1)

    def _db(self) -> Any:
        return _Cursor(self.env["DATABASE_URL"])

    # -- measuring ----------------------------------------------------------------------------

    def measure(self, drill: str, batch_id: str, broke_at: float, started_at: float,
                event_wait: float = 90) -> Figures:
        """Wait for the batch's terminal event, then measure every invariant."""
        self.wait_finished(batch_id)
        deadline = time.time() + event_wait
        while time.time() < deadline and not any(
                e["type"] in ("batch.completed", "batch.failed") for e in self.receiver.events(batch_id)):
            time.sleep(0.2)
        time.sleep(1.0)  # a late duplicate would show now
        with self._db() as cur:
            cur.execute("SELECT id, status FROM calls WHERE batch_id = %s", (batch_id,))
            calls = {row["id"]: row["status"] for row in cur.fetchall()}
            cur.execute("SELECT a.* FROM attempts a JOIN calls c ON c.id = a.call_id WHERE c.batch_id = %s",
                        (batch_id,))
            attempts = list(cur.fetchall())
            cur.execute("SELECT * FROM batches WHERE id = %s", (batch_id,))
            batch = cur.fetchone()
        creates = collections.Counter(
            (c["call_id"], c["attempt"]) for c in _read_jsonl(Path(self.env["BATCHCALLS_SIM_LOG"]))
            if c["call_id"] in calls)
        recorded = {(a["call_id"], a["number"]) for a in attempts}
        edges = sorted([(a["dialed_at"].timestamp(), 1) for a in attempts]
                       + [(a["ended_at"].timestamp(), -1) for a in attempts if a["ended_at"]],
                       key=lambda e: (e[0], e[1]))
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
            drill=drill, calls=len(calls), final=final if counted == final else -1,
            completed=batch["completed_calls"], failed=batch["failed_calls"],
            double_dials=sum(n - 1 for n in creates.values() if n > 1),
            undeclared_dials=len(set(creates) - recorded),
            max_live=max_live, concurrency=batch["concurrency"],
            terminal_events=sum(e["type"] in ("batch.completed", "batch.failed") for e in events),
            events_lost=len(set(calls) - reported) + (0 if any(e["type"] == "batch.started" for e in events) else 1),
            recover_seconds=(min(dials_after) - broke_at) if dials_after else float("nan"),
            total_seconds=time.time() - started_at,
        )


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


def start_system(workers: int = 3, **env: str) -> System:
    workdir = Path(tempfile.mkdtemp(prefix="bc-drill-"))
    os.chmod(workdir, 0o755)
    pg = start_postgres(workdir / "servers")
    rd = start_redis(workdir / "servers")
    pg_port = int(pg.url.rsplit(":", 1)[1].split("/")[0])
    redis_port = int(rd.url.rsplit(":", 1)[1].split("/")[0])
    database_url, redis_url = pg.url, rd.url
    upgrade(database_url)
    tenant, api_key = create_key(Database(database_url), "drill")
    close_pools()
    full_env = {**os.environ, **DRILL_ENV, **env, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                "BATCHCALLS_SIM_LOG": str(workdir / "sim-creates.jsonl"), "PYTHONPATH": str(ROOT)}
    system = System(workdir, full_env, pg, rd, pg_port, redis_port, start_receiver(), api_key, _free_port())
    system.start_api()
    for i in range(workers):
        system.start_worker(f"w{i + 1}")
    system.start_beat()
    return system
