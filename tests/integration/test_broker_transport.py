"""The broker transport on a real Redis: one Redis client per channel for its publishes, a new
one once the channel has a new connection pool (after a reconnect), and messages that arrive."""

from __future__ import annotations

from unittest import mock

import pytest

from config.settings import load_settings
from tests.support.servers import TestServers
from workers.broker import Channel
from workers.celery_app import create_celery

pytestmark = pytest.mark.integration


def test_publishes_share_one_client_until_the_pool_is_replaced(servers: TestServers) -> None:
    app = create_celery(load_settings({"REDIS_URL": servers.redis_url, "DATABASE_URL": servers.database_url}))
    queue = "test-transport"
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        with mock.patch.object(Channel, "_create_client", autospec=True, side_effect=Channel._create_client) as created:
            for n in range(3):
                app.send_task("test.nothing", (n,), queue=queue, connection=conn)
            assert created.call_count == 1
            channel._disconnect_pools()  # what a broken connection leads to
            app.send_task("test.nothing", (3,), queue=queue, connection=conn)
            assert created.call_count == 2
        client = channel.client
        assert client.llen(queue) == 4
        client.delete(queue)
    app.close()
