"""What Celery shows of its configuration and of a task's arguments (`celery inspect conf`,
Flower's Config tab and task pages) holds no secret and no callee's answer (pure: no broker)."""

from __future__ import annotations

import json
import secrets
from dataclasses import fields, replace
from typing import Any

import pytest

from batchcalls.adapters.telephony.vonage import load_private_key
from batchcalls.domain.errors import ConfigurationError
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import AttemptStatus
from config.settings import Settings, is_secret, load_settings
from workers.celery_app import create_celery
from workers.queue import CeleryTaskQueue

SECRETS = {
    "DATABASE_URL": "postgresql://bc:pg-Pa55-word@db.internal:5432/batchcalls",
    "REDIS_URL": "redis://:redis-Pa55-word@redis.internal:6379/0",
    "VONAGE_APPLICATION_ID": "app-1",
    "VONAGE_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----",
    "VONAGE_SIGNATURE_SECRET": "signature-secret-0123456789",
    "VONAGE_FROM_NUMBER": "+447700900001",
}
SHOWN_NEVER = ("pg-Pa55-word", "redis-Pa55-word", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "signature-secret-0123456789")


def test_the_celery_configuration_holds_no_setting_of_ours_and_no_secret() -> None:
    app = create_celery(load_settings(SECRETS))
    for with_defaults in (False, True):
        # What the worker's `conf` control command answers (celery/worker/control.py).
        dump = json.dumps(app.conf.table(with_defaults=with_defaults), default=repr)
        for secret in SHOWN_NEVER:
            assert secret not in dump, (secret, with_defaults)
    assert app.conf.table()["broker_url"] == "redis://:********@redis.internal:6379/0"
    assert app.settings.vonage_signature_secret == "signature-secret-0123456789"


class Sent:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def send_task(self, name: str, args: Any, kwargs: Any, **options: Any) -> None:
        self.calls.append({"name": name, "args": args, **options})


def test_an_event_task_shows_how_many_answers_it_carries_not_what_they_say() -> None:
    app = create_celery(load_settings(SECRETS))
    sent = Sent()
    app.send_task = sent.send_task
    queue = CeleryTaskQueue(app)
    said = [{"step": 1, "digits": "4921", "speech": [{"text": "my card number is 4921", "confidence": 0.9}]}]
    answered = ProviderEvent("call_1", 1, AttemptStatus.ANSWERED, 1.0, provider_call_id="u-1", responses=said)
    queue.record_event(answered, countdown=2)
    queue.record_events([answered, ProviderEvent("call_1", 1, AttemptStatus.RINGING, 0.5)], countdown=2)
    assert [c["name"] for c in sent.calls] == ["batchcalls.record_event", "batchcalls.record_events"]
    for call in sent.calls:
        assert "4921" not in call["argsrepr"] and "card" not in call["argsrepr"]
        assert "'responses': '<1 responses>'" in call["argsrepr"] and "'call_id': 'call_1'" in call["argsrepr"]
    assert sent.calls[0]["args"][0]["responses"] == said  # the task itself still gets them


def test_the_tasks_of_control_commands_show_their_batch_and_call_ids_and_no_answer() -> None:
    """What Flower's task list shows of the tasks a resume, a cancel with hangup, an expiry, a start and
    a simulated callee's opt-out cause: which batch and which call, never what the callee said."""
    app = create_celery(load_settings(SECRETS))
    sent = Sent()
    app.send_task = sent.send_task
    queue = CeleryTaskQueue(app)
    queue.dispatch("batch_1", 5)
    queue.hang_up("batch_1", "call_2", tries=1, countdown=1)
    queue.expire("batch_1", countdown=3)
    queue.start("batch_1", countdown=2)
    queue.record_input("call_3", 1, 2, [{"step": 2, "digits": "9", "speech": [{"text": "stop calling"}]}], 1)
    shown = {c["name"]: c["argsrepr"] for c in sent.calls}
    assert "'batch_1'" in shown["batchcalls.dispatch"]
    assert shown["batchcalls.hang_up"] == "('batch_1', 'call_2')"
    assert shown["batchcalls.expire"] == "('batch_1',)"
    assert shown["batchcalls.start"] == "('batch_1',)"
    assert shown["batchcalls.record_input"] == "('call_3', 1, 2, '<1 responses>')"
    assert sent.calls[-1]["args"][3][0]["digits"] == "9"  # the task itself gets them


def test_a_key_pasted_without_its_begin_line_is_not_echoed_in_the_error() -> None:
    body = "MIIEowIBAAKCAQEA" + "x" * 300
    for value in (body, "\\n".join([body[:64], body[64:128], body[128:]])):
        with pytest.raises(ConfigurationError) as excinfo:
            load_private_key(value)
        assert "MIIEowIBAAKCAQEA" not in str(excinfo.value)
        assert "neither PEM text nor a readable key file" in str(excinfo.value)
    with pytest.raises(ConfigurationError, match="/nonexistent/private.key: No such file"):
        load_private_key("/nonexistent/private.key")


def test_the_settings_repr_shows_no_secret() -> None:
    settings = load_settings(SECRETS)
    shown = repr(settings)
    assert [secret for secret in SHOWN_NEVER if secret in shown] == []
    assert "vonage_application_id='app-1'" in shown and "database_url='********'" in shown
    assert "vonage_signature_secret=None" in repr(load_settings({}))


def test_every_setting_named_like_a_credential_is_masked_in_the_repr() -> None:
    """A value is set for every field whose name holds token, secret, key, password or url: none
    of them may show, whichever was added last."""
    secret_names = [item.name for item in fields(Settings) if is_secret(item.name)]
    assert {
        "metrics_token",
        "database_url",
        "redis_url",
        "vonage_private_key",
        "vonage_signature_secret",
        "public_base_url",
    } <= set(secret_names)
    values = {name: f"value-of-{name}-{secrets.token_hex(8)}" for name in secret_names}
    settings = replace(load_settings({}), **values, extra={"some_api_key": "extra-secret-1234", "region": "eu"})
    shown = repr(settings)
    assert [name for name, value in values.items() if value in shown] == []
    assert all(f"{name}='********'" in shown for name in secret_names)
    assert "extra-secret-1234" not in shown and "'region': 'eu'" in shown
    assert "metrics_token='********'" in repr(load_settings({"BATCHCALLS_METRICS_TOKEN": "scrape-token-5678"}))
