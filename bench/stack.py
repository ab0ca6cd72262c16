"""The real stack for the benchmark, every part a subprocess as in production: the API under
gunicorn, two Celery worker processes (prefork), beat, on PostgreSQL and Redis found the way the
tests find them (DATABASE_URL / REDIS_URL, else servers listening on the default local ports, else
embedded ones), in a fresh database and a Redis database number of its own, removed afterwards.

Between scenarios the workers are restarted with the scenario's simulator settings, and what the
previous scenario left (an unfinished batch, broker messages, gates) is cleared."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import psycopg2.extras
import redis
import requests

from batchcalls.adapters.store.db import Database, close_pools
from batchcalls.adapters.store.migrate import upgrade
from batchcalls.adapters.store.tenants import create_key
from tests.support.servers import test_servers

ROOT = Path(__file__).resolve().parents[1]

BASE_ENV = {
    "BATCHCALLS_PROVIDER": "simulator",
    "BATCHCALLS_ALLOW_HTTP_CALLBACKS": "1",
    "BATCHCALLS_CALLBACK_ALLOWLIST": "127.0.0.1",
    "BATCHCALLS_RATE_LIMIT": "100000 per minute",
    # Scenario 2 asks for unbounded concurrency, scenario 3 for 5,000.
    "BATCHCALLS_MAX_CONCURRENCY": "1000000",
    # One tenant submits every run's batches, and a 100,000-call batch is still running when the
    # next run submits: its quota of calls not yet final must hold them all.
    "BATCHCALLS_TENANT_MAX_QUEUED_CALLS": "1000000",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Peak:
    """Peak RSS (bytes) seen of one group of processes: the largest single process, and the
    largest sum over the group at one sampling instant."""

    process: int = 0
    total: int = 0


class MemorySampler:
    """Samples the RSS of named process trees (a main process and its children) in a thread,
    and the CPU time each tree used while sampled (`cpu_seconds`: user and system time of every
    process seen, counted from the first sample; a figure a busy machine does not inflate)."""

    def __init__(self, roots: dict[str, int], interval: float = 0.1) -> None:
        self.roots = roots
        self.interval = interval
        self.peaks = {name: Peak() for name in roots}
        self._cpu: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def cpu_seconds(self, name: str) -> float:
        return sum(last - first for first, last in self._cpu[name].values())

    def _run(self) -> None:
        procs: dict[int, psutil.Process] = {}
        while not self._stop.is_set():
            for name, pid in self.roots.items():
                try:
                    root = procs.get(pid) or procs.setdefault(pid, psutil.Process(pid))
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                sizes = []
                for proc in tree:
                    with contextlib.suppress(psutil.Error):
                        known = procs.setdefault(proc.pid, proc)
                        sizes.append(known.memory_info().rss)
                        times = known.cpu_times()
                        used = times.user + times.system
                        first, _ = self._cpu[name].get(proc.pid, (used, used))
                        self._cpu[name][proc.pid] = (first, used)
                peak = self.peaks[name]
                peak.process = max(peak.process, *sizes, 0)
                peak.total = max(peak.total, sum(sizes))
            self._stop.wait(self.interval)


@dataclass
class Stack:
    workdir: Path
    database_url: str
    redis_url: str
    api_key: str
    pool_size: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    profile_dir: Path | None = None
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # -- processes ----------------------------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **BASE_ENV,
            **extra,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "PYTHONPATH": str(ROOT),
        }

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_api(self, **env: str) -> None:
        self.api_port = _free_port()
        # As the Procfile runs it (two workers); a long timeout so that a slow 100,000-call
        # submit is measured rather than killed.
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
                "--timeout",
                "300",
                "api.app:create_app()",
            ],
            self._env(**env),
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"{self.api_url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the API did not start; see {self.workdir / 'api.log'}")

    def start_workers(self, env: dict[str, str] | None = None, app: str = "workers.tasks", beat: bool = True) -> None:
        """Exactly two worker processes, each a prefork pool of `pool_size`, and (for the engine)
        beat; started as the Procfile starts them (with task events on, for Flower)."""
        self.env = self._env(**(env or {}))
        for i in (1, 2):
            self._spawn(
                f"w{i}",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    app,
                    "worker",
                    "--events",
                    "--loglevel",
                    "WARNING",
                    "--concurrency",
                    str(self.pool_size),
                    "-n",
                    f"w{i}@%h",
                    "--without-mingle",
                    "--without-gossip",
                ],
                self.env,
            )
        if beat:
            self._spawn(
                "beat",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    app,
                    "beat",
                    "--loglevel",
                    "WARNING",
                    "--schedule",
                    str(self.workdir / "beat-schedule"),
                ],
                self.env,
            )
        self._wait_workers_ready()

    def _wait_workers_ready(self, timeout: float = 60) -> None:
        """Until both workers answer a ping (their pools are forked and consuming)."""
        from celery import Celery

        probe = Celery(broker=self.redis_url)
        probe.conf.broker_transport_options = {"sep": ":"}
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                for name in ("w1", "w2"):
                    proc = self.procs.get(name)
                    if proc is not None and proc.poll() is not None:
                        raise RuntimeError(f"worker {name} exited; see {self.workdir / (name + '.log')}")
                replies = probe.control.ping(timeout=0.5) or []
                if len(replies) >= 2:
                    return
            raise RuntimeError(f"the workers did not start; see {self.workdir}")
        finally:
            probe.close()

    def stop(self, *names: str) -> None:
        procs = [(n, self.procs.pop(n)) for n in names if n in self.procs]
        for _, proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def stop_workers(self) -> None:
        self.stop("w1", "w2", "beat")

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items() if name in ("api", "w1", "w2")}

    # -- profiling ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def profiled(self, label: str) -> Iterator[None]:
        """With --profile: py-spy records the API and each worker (with its pool children)."""
        if self.profile_dir is None:
            yield
            return
        started = []
        for name, pid in self.pids().items():
            out = self.profile_dir / f"{label}-{name}.txt"
            started.append(
                subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(pid),
                        "--subprocesses",
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1.0)  # py-spy attaches
        try:
            yield
        finally:
            for proc in started:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
            for proc in started:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    # -- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        """With the workers stopped: end every unfinished batch in Postgres (as cancelled) and
        empty the Redis database (broker queues, gates, metrics), so nothing of one scenario runs
        into the next."""
        with self.cursor() as cur:
            cur.execute(
                "UPDATE calls SET status = 'cancelled', outcome = 'cancelled'"
                " WHERE status NOT IN ('completed', 'failed', 'cancelled')"
            )
            cur.execute(
                "UPDATE batches SET status = 'cancelled', finished_at = clock_timestamp()"
                " WHERE status IN ('queued', 'running', 'paused')"
            )
            cur.execute(
                "UPDATE events SET given_up_at = clock_timestamp() WHERE delivered_at IS NULL AND given_up_at IS NULL"
            )
        self.redis().flushdb()

    def new_tenant(self, name: str) -> str:
        """A tenant of its own; returns its API key."""
        _, api_key = create_key(Database(self.database_url), f"{name}-{time.time_ns()}")
        return api_key

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        conn = psycopg2.connect(self.database_url)
        conn.autocommit = True
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
        finally:
            conn.close()

    def submit(self, body: dict[str, Any] | bytes, api_key: str | None = None) -> tuple[str, float, float]:
        """POST a batch (as the bench's tenant, or the owner of `api_key`): (batch id, when the
        request began, seconds to the 202)."""
        data = body if isinstance(body, bytes) else _dumps(body)
        headers = {"Authorization": f"Bearer {api_key or self.api_key}", "Content-Type": "application/json"}
        started = time.time()
        response = requests.post(f"{self.api_url}/v1/batches", data=data, headers=headers, timeout=600)
        elapsed = time.time() - started
        if response.status_code != 202:
            raise RuntimeError(f"submit answered {response.status_code}: {response.text[:500]}")
        return str(response.json()["batch_id"]), started, elapsed


def _dumps(body: Any) -> bytes:
    import json

    return json.dumps(body, separators=(",", ":")).encode()


@contextlib.contextmanager
def running_stack(pool_size: int, profile_dir: Path | None = None) -> Iterator[Stack]:
    with test_servers() as servers, tempfile.TemporaryDirectory(prefix="bc-bench-") as tmp:
        upgrade(servers.database_url)
        _, api_key = create_key(Database(servers.database_url), "bench")
        close_pools()
        stack = Stack(Path(tmp), servers.database_url, servers.redis_url, api_key, pool_size, profile_dir=profile_dir)
        try:
            yield stack
        finally:
            stack.stop(*stack.procs)
            # A last look at what the processes logged, for a failed run (kept when asked).
            keep = os.environ.get("BENCH_KEEP_LOGS")
            if keep:
                import shutil

                shutil.copytree(tmp, keep, dirs_exist_ok=True)
