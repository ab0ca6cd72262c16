"""Fixtures for tests of the HTTP API through Flask's test client on real PostgreSQL and Redis.

`api_factory(**env)` builds an app with its own settings (small limits per test) and a fresh
tenant, so no two tests share a rate-limit budget or a row count. The apps run on a database and a
Redis database of their own (`api_servers`), not the session `stack`'s: its workers would otherwise
take the dispatch tasks these tests look for in the broker, and dial their batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api.app import create_app
from batchcalls.adapters.gates import Gates
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.migrate import upgrade
from batchcalls.adapters.store.tenants import Tenant, create_key
from config.settings import load_settings
from tests.support.servers import TestServers, more_test_servers

TENANT_PREFIX = "api-test-"


@dataclass
class Api:
    """One app and one tenant of it."""

    app: Flask
    client: FlaskClient
    tenant: Tenant
    key: str
    pg: psycopg2.extensions.connection
    redis: redis.Redis  # the app's REDIS_URL: its gates and its Celery broker

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **extra}

    def post(
        self, body: Any = None, *, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> TestResponse:
        """POST /v1/batches with `body` as JSON (None is sent as `null`), or the raw bytes `data`."""
        return self.client.post(
            "/v1/batches",
            data=json.dumps(body).encode() if data is None else data,
            content_type="application/json",
            headers={**self.headers(), **(headers or {})},
        )

    def get(self, path: str, **params: Any) -> TestResponse:
        return self.client.get(path, query_string=params, headers=self.headers())

    def stored(self) -> tuple[int, int]:
        """(batches, calls) rows this tenant has."""
        with self.pg.cursor() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM batches WHERE tenant_id = %(t)s),"
                " (SELECT count(*) FROM calls c JOIN batches b ON b.id = c.batch_id WHERE b.tenant_id = %(t)s)",
                {"t": self.tenant.id},
            )
            batches, calls = cur.fetchone()
        return int(batches), int(calls)


@pytest.fixture(scope="session")
def api_servers(servers: TestServers) -> Iterator[TestServers]:
    """A database and Redis database number no worker process of the session serves."""
    with more_test_servers(servers) as own:
        yield own


@pytest.fixture(scope="session")
def api_database(api_servers: TestServers) -> str:
    upgrade(api_servers.database_url)
    return api_servers.database_url


@pytest.fixture(scope="session")
def pg(api_database: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(api_database)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture(scope="module")
def _retire_api_test_batches(api_servers: TestServers, pg: psycopg2.extensions.connection) -> Iterator[None]:
    """After a module's API tests, end every batch their tenants left waiting and drop its Redis
    state, so that nothing a later test looks at counts them as waiting."""
    yield
    retire_test_batches(pg, api_servers.redis_url)


def retire_test_batches(pg: psycopg2.extensions.connection, redis_url: str) -> None:
    """End every batch of an API test tenant still waiting in `pg`'s database and drop its
    Redis state in `redis_url`, so that no worker process (nor its reconciler) dials those calls."""
    with pg.cursor() as cur:
        cur.execute(
            "UPDATE calls SET status = 'cancelled', outcome = 'cancelled' WHERE status NOT IN"
            " ('completed', 'failed', 'cancelled') AND batch_id IN (SELECT b.id FROM batches b"
            " JOIN tenants t ON t.id = b.tenant_id WHERE t.name LIKE %s)",
            (TENANT_PREFIX + "%",),
        )
        cur.execute(
            "UPDATE batches SET status = 'cancelled', finished_at = clock_timestamp(),"
            " cancelled_calls = total_calls - completed_calls - failed_calls"
            " WHERE status IN ('queued', 'running', 'paused') AND tenant_id IN"
            " (SELECT id FROM tenants WHERE name LIKE %s) RETURNING id",
            (TENANT_PREFIX + "%",),
        )
        retired = [row[0] for row in cur.fetchall()]
    gates = Gates(redis.Redis.from_url(redis_url), lease_seconds=60)
    for batch_id in retired:
        gates.forget(batch_id)


def new_tenant(database_url: str) -> tuple[Tenant, str]:
    return create_key(Database(database_url), TENANT_PREFIX + os.urandom(6).hex())


@pytest.fixture
def api_factory(
    api_servers: TestServers, api_database: str, pg: psycopg2.extensions.connection, _retire_api_test_batches: None
) -> Callable[..., Api]:
    """`api_factory(BATCHCALLS_RATE_LIMIT="3 per minute", ...)`: an app with those settings
    (the rate limits are generous unless given: every test client's address is 127.0.0.1) and
    a tenant of its own."""

    def make(**env: str) -> Api:
        settings = load_settings(
            {
                "BATCHCALLS_RATE_LIMIT": "100000 per minute",
                "BATCHCALLS_AUTH_FAILURE_LIMIT": "100000 per minute",
                **env,
                "DATABASE_URL": api_database,
                "REDIS_URL": api_servers.redis_url,
            }
        )
        app = create_app(settings)
        tenant, key = new_tenant(api_database)
        return Api(app, app.test_client(), tenant, key, pg, redis.Redis.from_url(settings.redis_url))

    return make


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    return api_factory()
