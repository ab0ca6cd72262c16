"""The secret that signs the dashboard's cookies when no setting gives one: made once, shared
through Redis by every API process, read again after Redis lost it."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from api.dashboard.access import SecretSource
from batchcalls.adapters import redis_keys


def test_processes_share_one_secret_and_a_setting_wins() -> None:
    client = fakeredis.FakeRedis()
    first, second = SecretSource(None, client), SecretSource(None, client)
    assert first.get() == second.get() == client.get(redis_keys.DASHBOARD_SECRET).decode()
    assert len(first.get()) >= 48
    assert SecretSource("from-the-setting", client).get() == "from-the-setting"


def test_a_lost_secret_is_replaced_everywhere_on_the_next_read(monkeypatch: pytest.MonkeyPatch) -> None:
    client = fakeredis.FakeRedis()
    source = SecretSource(None, client)
    old = source.get()
    client.flushall()
    monkeypatch.setattr(SecretSource, "REREAD_SECONDS", 0.0)
    new = source.get()
    assert new != old and SecretSource(None, client).get() == new


def test_the_last_secret_read_is_used_while_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    client = fakeredis.FakeRedis()
    source = SecretSource(None, client)
    known = source.get()
    monkeypatch.setattr(SecretSource, "REREAD_SECONDS", 0.0)

    def down(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(client, "set", down)
    assert source.get() == known
    with pytest.raises(redis.RedisError):
        SecretSource(None, client).get()
