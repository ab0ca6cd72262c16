"""Prepared statements on real PostgreSQL: a call's queries are planned once per connection, not
once per call; turned off, nothing is prepared; and a migration that changes a table under a
prepared `SELECT *` costs one retried transaction, not a worker that fails every call after it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from batchcalls.adapters.store import db as db_mod
from batchcalls.adapters.store.batches import get_batch
from batchcalls.adapters.store.db import Database, close_pools, execute
from batchcalls.adapters.store.migrate import upgrade
from tests.support.servers import TestServers, more_test_servers

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url(servers: TestServers) -> Iterator[str]:
    """A database of its own: one test here changes a table's shape."""
    with more_test_servers(servers) as own:
        upgrade(own.database_url)
        yield own.database_url
        close_pools()


def _prepared(cur: psycopg2.extensions.cursor) -> list[str]:
    cur.execute("SELECT statement FROM pg_prepared_statements ORDER BY prepare_time")
    return [row["statement"] for row in cur.fetchall()]


def test_a_statement_is_prepared_once_per_connection_and_then_executed(database_url: str) -> None:
    db = Database(database_url)
    with db.transaction() as cur:
        for batch_id in ("b1", "b2", "b3"):
            assert get_batch(cur, batch_id) is None
        execute(cur, "SELECT %s::int + 1 AS n, '50%%' AS pct", (41,))
        assert cur.fetchone() == {"n": 42, "pct": "50%"}
        statements = _prepared(cur)
    assert statements == [
        "PREPARE bc_0 AS SELECT * FROM batches WHERE id = $1",
        "PREPARE bc_1 AS SELECT $1::int + 1 AS n, '50%' AS pct",
    ]
    with db.transaction() as cur:  # the same pooled connection: nothing prepared again
        assert get_batch(cur, "b4") is None
        assert len(_prepared(cur)) == 2


def test_preparing_turned_off_prepares_nothing(database_url: str) -> None:
    db = Database(database_url, prepare=False)
    with db.transaction() as cur:
        assert get_batch(cur, "b1") is None
        execute(cur, "SELECT %s::int + 1 AS n", (41,))
        assert cur.fetchone() == {"n": 42}
        assert _prepared(cur) == []


def test_a_schema_change_under_a_prepared_select_is_a_transient_error_then_works(database_url: str) -> None:
    db = Database(database_url)
    with db.transaction() as cur:
        cur.execute("INSERT INTO tenants (name, webhook_secrets) VALUES ('t', '{}') RETURNING id")
        tenant = cur.fetchone()["id"]
        cur.execute(
            "INSERT INTO batches (id, tenant_id, status, concurrency, priority, retry_config, total_calls)"
            " VALUES ('b1', %s, 'queued', 1, 5, '{}', 0)",
            (tenant,),
        )
        assert get_batch(cur, "b1") is not None
    other = psycopg2.connect(database_url)
    other.autocommit = True
    with other.cursor() as cur:
        cur.execute("ALTER TABLE batches ADD COLUMN note text")  # a migration while workers run
    other.close()

    # The task sees an error it retries (TRANSIENT in workers.tasks), not a failure of the call.
    with pytest.raises(psycopg2.OperationalError, match="schema change"), db.transaction() as cur:
        get_batch(cur, "b1")
    assert not any(key[1] == database_url for key in db_mod._pools), "the outdated connections were kept"
    with db.transaction() as cur:
        row = get_batch(cur, "b1")
    assert row is not None and row["note"] is None
