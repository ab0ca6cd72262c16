"""The real system for integration tests: Celery worker processes and beat as subprocesses (as
in production), the Flask API served over HTTP on 127.0.0.1, a callback receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import redis
import requests
from werkzeug.serving import make_server

from api.app import create_app
from batchcalls.adapters import redis_keys
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.migrate import upgrade
from batchcalls.adapters.store.tenants import create_key
from config.settings import load_settings
from tests.support.receiver import Receiver, start_receiver

ROOT = Path(__file__).resolve().parents[2]

# Fast engine timings so recovery paths run within a test's patience.
TEST_ENV = {
    "BATCHCALLS_SIM_RING_SECONDS": "0.25",
    "BATCHCALLS_SIM_CALL_SECONDS": "0.5",
    "BATCHCALLS_RECONCILE_SECONDS": "1",
    "BATCHCALLS_LEASE_SECONDS": "8",
    "BATCHCALLS_STALE_ATTEMPT_SECONDS": "3",
    "BATCHCALLS_MAX_COUNTDOWN_SECONDS": "3",
    "BATCHCALLS_VISIBILITY_TIMEOUT": "15",
    "BATCHCALLS_ALLOW_HTTP_CALLBACKS": "1",
    "BATCHCALLS_CALLBACK_ALLOWLIST": "127.0.0.1",
    "BATCHCALLS_PROVIDER": "simulator",
    "BATCHCALLS_RATE_LIMIT": "100000 per minute",
    "BATCHCALLS_AUTH_FAILURE_LIMIT": "100000 per minute",
    "BATCHCALLS_METRICS_CACHE_SECONDS": "0",  # tests watch gauges move within a short batch
}


@dataclass
class Stack:
    env: dict[str, str]
    api_url: str
    api_key: str
    webhook_secret: str
    receiver: Receiver
    sim_log: Path
    log_dir: Path
    db: Database
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    beat: subprocess.Popen[bytes] | None = None
    _server: Any = None

    # -- processes ----------------------------------------------------------------------------

    def start_worker(self, name: str, concurrency: int = 2, queues: str | None = None) -> subprocess.Popen[bytes]:
        """A Celery worker process; without `queues` it consumes every queue (call handling and
        deliveries: fewer processes than production's dedicated delivery worker, the same tasks)."""
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.tasks",
                "worker",
                "--events",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "-n",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
                *(["--queues", queues] if queues else []),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers[name] = proc
        return proc

    def start_beat(self) -> None:
        log = open(self.log_dir / "beat.log", "ab")  # noqa: SIM115
        self.beat = subprocess.Popen(
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
                str(self.log_dir / "beat-schedule"),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker's main process and its pool children at once."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        procs = list(self.workers.values()) + ([self.beat] if self.beat else [])
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._server is not None:
            self._server.shutdown()
        self.receiver.stop()

    # -- API ----------------------------------------------------------------------------------

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **extra}

    def submit(self, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        response = requests.post(f"{self.api_url}/v1/batches", json=body, headers=self.headers(**headers), timeout=60)
        assert response.status_code == 202, response.text
        return response.json()  # type: ignore[no-any-return]

    def status(self, batch_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.api_url}/v1/batches/{batch_id}", headers=self.headers(), timeout=30)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def all_calls(self, batch_id: str) -> list[dict[str, Any]]:
        found, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            response = requests.get(
                f"{self.api_url}/v1/batches/{batch_id}/calls", params=params, headers=self.headers(), timeout=30
            )
            assert response.status_code == 200, response.text
            page = response.json()
            found += page["calls"]
            cursor = page["next_cursor"]
            if not cursor:
                return found

    def wait_finished(self, batch_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            body = self.status(batch_id)
            if body["finished_at"] is not None:
                return body
            time.sleep(0.2)
        raise AssertionError(f"batch {batch_id} did not finish in {timeout}s: {self.status(batch_id)}")

    def wait_delivered(self, batch_id: str, timeout: float = 60) -> int:
        """Wait until every event the batch's outbox holds is marked delivered (or given up), and
        return how many it holds. The relay marks an event after its POST was answered, so from
        then on nothing of the batch is left to send: a later duplicate could only come from a
        delivery that ignored the mark, which is what the callers check for."""
        deadline = time.time() + timeout
        conn = psycopg2.connect(self.env["DATABASE_URL"])
        conn.autocommit = True
        try:
            while True:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(*), count(*) FILTER (WHERE delivered_at IS NULL AND given_up_at IS NULL)"
                        " FROM events WHERE batch_id = %s",
                        (batch_id,),
                    )
                    total, pending = cur.fetchone()
                if total and not pending:
                    return int(total)
                assert time.time() < deadline, f"{pending} of {total} events of {batch_id} undelivered after {timeout}s"
                time.sleep(0.1)
        finally:
            conn.close()

    def wait_inbox_applied(self, timeout: float = 60) -> None:
        """Wait until every provider event taken in so far has been applied: a drain deletes an
        event from its inbox shard's stream once it is applied, so every stream empty means no
        event taken before this call is still to change a call."""
        shards = load_settings(self.env).event_shards
        client = redis.Redis.from_url(self.env["REDIS_URL"])
        deadline = time.time() + timeout
        try:
            while owed := sum(int(client.xlen(redis_keys.event_stream(shard))) for shard in range(shards)):
                assert time.time() < deadline, f"{owed} provider events still unapplied after {timeout}s"
                time.sleep(0.1)
        finally:
            client.close()

    def sim_creates(self) -> list[dict[str, Any]]:
        import json

        if not self.sim_log.exists():
            return []
        return [json.loads(line) for line in self.sim_log.read_text().splitlines() if line.strip()]

    def sim_hangups(self) -> list[dict[str, Any]]:
        """The simulator's log of hangups (beside its log of creates)."""
        import json

        path = Path(str(self.sim_log) + ".hangups")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _not_ready(environ: Any, start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


def start_stack(database_url: str, redis_url: str, tmp: Path, workers: int = 2, **env: str) -> Stack:
    upgrade(database_url)
    tmp.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        **TEST_ENV,
        **env,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BATCHCALLS_SIM_LOG": str(tmp / "sim-creates.jsonl"),
        "PYTHONPATH": str(ROOT),
    }
    # The server is made first so that its URL is known: provider webhooks go to PUBLIC_BASE_URL.
    server = make_server("127.0.0.1", 0, _not_ready, threaded=True)
    api_url = f"http://127.0.0.1:{server.server_port}"
    full_env["PUBLIC_BASE_URL"] = env.get("PUBLIC_BASE_URL", api_url)
    settings = load_settings(full_env)
    db = Database(database_url)
    tenant, api_key = create_key(db, "test-" + os.urandom(4).hex())
    receiver = start_receiver()
    server.app = create_app(settings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack = Stack(
        full_env,
        api_url,
        api_key,
        tenant.webhook_secrets[0],
        receiver,
        tmp / "sim-creates.jsonl",
        tmp,
        db,
        _server=server,
    )
    for i in range(workers):
        stack.start_worker(f"w{i + 1}")
    stack.start_beat()
    return stack
