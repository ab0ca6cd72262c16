"""A new API or worker process does its first-use work at start, not in its first request or
task: the request checks compile no pattern, and `send_task` imports and builds nothing more."""

from __future__ import annotations

import socket
from unittest import mock

from api import batches
from api.schemas import check_storable_text, load_batch_request
from batchcalls.domain import validation
from batchcalls.domain.validation import build_batch
from batchcalls.domain.voices import voice_catalog
from config.settings import load_settings
from workers.celery_app import create_celery
from workers.queue import CeleryTaskQueue

# Nothing listens on port 1: a warm-up that tried to connect would fail.
UNREACHABLE = {"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}


def test_a_warm_api_checks_a_request_without_compiling_a_pattern() -> None:
    validation.warm_up()
    batches.warm_up(max_concurrency=100)
    body = {
        "calls": [
            {"phone_number": "+14155550123", "script": {"text": "Hi there."}},
            {"phone_number": "+442079460958", "script": {"text": "Hello."}, "priority": 3},
        ],
        "callback_url": "http://crm.internal:8080/hooks/calls?x=1",
        "concurrency": 2,
        "priority": 7,
    }
    with mock.patch("re.compile", side_effect=AssertionError("compiled during a request")):
        check_storable_text(body)
        batch = build_batch(load_batch_request(body), max_concurrency=100, voices=voice_catalog())
    assert batch.callback_url == "http://crm.internal:8080/hooks/calls?x=1"
    assert [c.phone_number for c in batch.calls] == ["+14155550123", "+442079460958"]


def test_the_task_queue_warms_up_without_connecting() -> None:
    queue = CeleryTaskQueue(create_celery(load_settings(UNREACHABLE)))
    with mock.patch.object(socket.socket, "connect", side_effect=AssertionError("connected")):
        queue.warm_up()
    assert queue.app.amqp._producer_pool is not None
