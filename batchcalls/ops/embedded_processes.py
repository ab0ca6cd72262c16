"""Processes, ports and log files of the embedded servers (see `batchcalls.ops.embedded`)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import psutil

from batchcalls.domain.errors import BatchcallsError

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


# What a launcher returns: the server's pid, its URL and how to stop it.
Launched = tuple[int, str, Callable[[], None]]


class EmbeddedServerError(BatchcallsError):
    code = "embedded_server_error"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def process_in(pid: int, workdir: Path) -> psutil.Process | None:
    """The live process `pid` if it works in `workdir` (a postmaster or redis-server chdirs to
    its data directory), else None."""
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE and Path(process.cwd()) == workdir:
            return process
    except (psutil.Error, OSError):
        pass
    return None


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def wait_gone(pid: int, grace: float = 10.0) -> None:
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
            if gone(pid):
                return
            time.sleep(0.02)
    raise EmbeddedServerError(f"process {pid} would not exit")


def log_offset(path: Path, limit: int = 10 * 1024 * 1024) -> int:
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


def tail(path: Path, offset: int, limit: int = 4000) -> str:
    try:
        with path.open(errors="replace") as handle:
            handle.seek(offset)
            return handle.read()[-limit:]
    except OSError:
        return ""


def package_dir(package: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"the {package!r} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))
