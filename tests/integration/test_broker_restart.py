"""A worker outlives Redis restarts while it holds unacknowledged tasks.

The engine's workers always hold some: countdown tasks (retry wake-ups, delayed deliveries)
are reserved by the worker, unacknowledged, until they come due. Celery 5.7.0 closes the broken
broker connection a second time after collecting it, and that close restores the unacknowledged
messages through a transport whose client is already gone: the worker dies with an
AttributeError ("Unrecoverable error") at the first or second Redis restart, and nothing dials
again until someone starts it. setup.cfg keeps Celery below 5.7 for this reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from batchcalls.ops.embedded import start_redis
from bench import noop
from config.settings import load_settings
from tests.support.stack import ROOT

pytestmark = pytest.mark.integration

RESTARTS = 4


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_holding_unacked_tasks_survives_redis_restarts(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "servers")
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "worker.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.noop",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sender = noop.create_app(load_settings({"REDIS_URL": url}))
    client = redis.Redis.from_url(url)
    try:
        _wait_for(lambda: b"ready" in log_path.read_bytes(), 60, "the worker to start")
        for restart in range(RESTARTS):
            # Countdown tasks the worker reserves and holds unacknowledged, plus some to run now.
            for _ in range(4):
                sender.send_task("bench.noop", (10**9,), countdown=30)
            for _ in range(4):
                sender.send_task("bench.noop", (10**9,))
            # The restart must come while the worker holds tasks unacknowledged (kombu keeps them in
            # its `unacked` hash until they are acknowledged).
            _wait_for(lambda: int(client.hlen("unacked")) >= 4, 30, "the worker to reserve the countdown tasks")
            server.stop()
            server = start_redis(tmp_path / "servers", port=port)
            connects = restart + 2  # the first connection, and one after each restart so far
            # "Connected to workers.broker:Transport://...": the product's Redis transport.
            _wait_for(
                lambda n=connects: log_path.read_bytes().count(b"Connected to ") >= n,
                30,
                f"the worker to reconnect after restart {restart + 1}",
            )
            assert worker.poll() is None, log_path.read_text()[-3000:]
        # Still consuming: tasks sent after the last restart run.
        client.delete(noop.DONE_KEY, noop.FINISHED_KEY)
        for _ in range(5):
            sender.send_task("bench.noop", (5,))
        _wait_for(lambda: client.get(noop.FINISHED_KEY) is not None, 30, "tasks sent after the restarts")
        assert b"Unrecoverable error" not in log_path.read_bytes()
    finally:
        sender.close()
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(5)
        log.close()
        server.stop()
