"""Run the whole system on one machine: migrations, the API, worker processes (call handling, and
one for webhook deliveries), beat and (optionally) Flower, as child processes that all stop when the supervisor does."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from batchcalls.adapters.queues import CALLS_QUEUE, DELIVERY_QUEUE
from batchcalls.adapters.store.db import Database, close_pools
from batchcalls.adapters.store.migrate import upgrade
from batchcalls.ops.dev_tenant import dev_key as dev_key  # the tests read it here
from batchcalls.ops.embedded import default_data_dir, embedded_servers

ROOT = Path(__file__).resolve().parents[2]
FLOWER_USER = "flower"


class Stopped(Exception):
    """SIGTERM arrived: unwind like Ctrl-C so every child and embedded server is stopped."""


class _Signals:
    """SIGTERM and Ctrl-C start the unwinding, once: a second one must not cut short the stopping
    of children and servers. Inside `deferred()` (a child being started and recorded, an embedded
    server being started) a signal waits until the block ends, so nothing started is left
    unrecorded and then orphaned."""

    def __init__(self) -> None:
        self.critical = 0
        self.pending: int | None = None
        self.unwinding = False

    def handle(self, signum: int, frame: object) -> None:
        if self.unwinding:
            return
        if self.critical:
            self.pending = signum
            return
        self._unwind(signum)

    def _unwind(self, signum: int) -> None:
        self.unwinding = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt()
        raise Stopped()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self.critical += 1
        try:
            yield
        finally:
            self.critical -= 1
            if not self.critical and self.pending is not None and not self.unwinding:
                signum, self.pending = self.pending, None
                self._unwind(signum)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _program(name: str) -> list[str]:
    """Run console scripts with this interpreter's copy, whatever PATH says."""
    if name == "celery":
        return [sys.executable, "-m", "celery"]
    if name == "gunicorn":
        return [sys.executable, "-m", "gunicorn"]
    found = shutil.which(name)
    return [found or name]


def flower_command(port: int) -> list[str]:
    """Flower's command line. It carries no credentials, since any local user can read a command
    line (`ps`): Flower reads them from FLOWER_BASIC_AUTH in its environment."""
    return [*_program("celery"), "-A", "workers.tasks", "flower", f"--port={port}", "--address=127.0.0.1"]


def flower_credentials(environ: Mapping[str, str]) -> tuple[str, bool]:
    """FLOWER_BASIC_AUTH (user:password) from `environ`, or one made up for this run; and whether
    it was made up. Flower is never served without a password: its API can shut workers down."""
    given = environ.get("FLOWER_BASIC_AUTH", "").strip()
    if given:
        return given, False
    return f"{FLOWER_USER}:{secrets.token_urlsafe(18)}", True


@dataclass
class System:
    api_url: str
    api_key: str
    webhook_secret: str
    flower_url: str | None
    env: dict[str, str]
    log_dir: Path
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    flower_password: str | None = None  # made up for this run (FLOWER_BASIC_AUTH unset), shown once
    signals: _Signals = field(default_factory=_Signals, repr=False)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with self.signals.deferred(), open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                env={**self.env, **(env or {})},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.children[name] = proc
        return proc

    def stop(self, grace: float = 20.0) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + grace
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def dead_children(self) -> list[str]:
        return [name for name, proc in self.children.items() if proc.poll() is not None]


def _wait_healthy(url: str, system: System, what: str = "the API", timeout: float = 60) -> None:
    """Until `url` answers 200 (the API's /healthz, Flower's /healthcheck: neither needs credentials)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        dead = system.dead_children()
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited at start; see the logs in {system.log_dir}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become healthy in {timeout}s; see {system.log_dir}")


def _worker_command(queue: str, node: str) -> list[str]:
    """A Celery worker of two pool processes consuming `queue`."""
    return [
        *_program("celery"),
        "-A",
        "workers.tasks",
        "worker",
        "--events",
        "--loglevel",
        "INFO",
        "--concurrency",
        "2",
        "--queues",
        queue,
        "-n",
        node,
    ]


@contextmanager
def run_system(
    port: int | None = None,
    workers: int = 2,
    *,
    flower: bool = False,
    extra_env: dict[str, str] | None = None,
    data_dir: Path | None = None,
) -> Iterator[System]:
    """Start everything (embedded PostgreSQL/Redis when their URLs are unset) and stop it all on
    the way out, Ctrl-C and SIGTERM included."""
    signals = _Signals()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    for signum in previous:
        signal.signal(signum, signals.handle)
    data_dir = data_dir or default_data_dir()
    try:
        with ExitStack() as servers:
            with signals.deferred():
                database_url, redis_url = servers.enter_context(
                    embedded_servers(
                        os.environ.get("DATABASE_URL") or None, os.environ.get("REDIS_URL") or None, data_dir
                    )
                )
            # However we unwind, stop the servers without interruption (runs before they stop).
            servers.callback(setattr, signals, "unwinding", True)
            upgrade(database_url)
            tenant, api_key = dev_key(Database(database_url), data_dir)
            close_pools()
            port = port or 8000
            log_dir = data_dir / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            env = {
                **os.environ,
                **(extra_env or {}),
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            }
            flower_port = free_port() if flower else None
            if flower_port:  # the dashboard's fleet page links to it
                env["BATCHCALLS_FLOWER_URL"] = f"http://127.0.0.1:{flower_port}"
            system = System(
                f"http://127.0.0.1:{port}",
                api_key,
                tenant.webhook_secrets[0],
                f"http://127.0.0.1:{flower_port}" if flower_port else None,
                env,
                log_dir,
                signals=signals,
            )
            try:
                system.spawn(
                    "api",
                    [
                        *_program("gunicorn"),
                        "--bind",
                        f"127.0.0.1:{port}",
                        "--workers",
                        "2",
                        "--access-logfile",
                        "-",
                        "api.app:create_app()",
                    ],
                )
                for i in range(workers):
                    system.spawn(f"worker{i + 1}", _worker_command(CALLS_QUEUE, f"worker{i + 1}@%h"))
                # As in production (Procfile `delivery`): webhook deliveries in a worker of their
                # own, so a slow receiver never holds up the calls.
                system.spawn("delivery", _worker_command(DELIVERY_QUEUE, "delivery@%h"))
                system.spawn(
                    "beat",
                    [
                        *_program("celery"),
                        "-A",
                        "workers.tasks",
                        "beat",
                        "--loglevel",
                        "INFO",
                        "--schedule",
                        str(log_dir / "beat-schedule"),
                    ],
                )
                if flower_port:
                    auth, made_up = flower_credentials(os.environ)
                    if made_up:
                        system.flower_password = auth.partition(":")[2]
                    system.spawn("flower", flower_command(flower_port), env={"FLOWER_BASIC_AUTH": auth})
                _wait_healthy(f"{system.api_url}/healthz", system)
                if system.flower_url:  # so that where `up` says Flower is, it answers
                    _wait_healthy(f"{system.flower_url}/healthcheck", system, "Flower")
                yield system
            finally:
                signals.unwinding = True  # however we got here, stop everything without interruption
                system.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
