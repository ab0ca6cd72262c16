"""PostgreSQL connections (psycopg2) and the transaction helper every repository uses.

One small pool per process, created lazily after fork; idle connections are reused. A pooled
connection the server closed (a Postgres restart) is noticed before use and replaced; one that
drops mid-transaction is discarded, and the caller's task retries the whole transaction.

The statements of a call's life run as server-side prepared statements (`execute`): Postgres
parses and plans each once per connection instead of on every call, which halved its CPU per
call. Behind a pooler in transaction mode (PgBouncer), where a session's prepared statements
do not follow it, turn this off with `Database(dsn, prepare=False)`
(`BATCHCALLS_PG_PREPARED_STATEMENTS=false`).
"""

from __future__ import annotations

import os
import re
import select
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool

_pools: dict[tuple[int, str, bool], psycopg2.pool.ThreadedConnectionPool] = {}
_lock = threading.Lock()

Cursor = psycopg2.extras.RealDictCursor

IDLE_CONNECTIONS = 4  # idle connections each process keeps for reuse


class PreparingConnection(psycopg2.extensions.connection):  # type: ignore[misc]
    """A connection that remembers the statements its server session has prepared."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared: dict[str, str] = {}  # statement text -> its prepared name


_PLACEHOLDER = re.compile(r"%%|%s")


def _numbered(sql: str) -> str:
    """psycopg2's `%s` placeholders as Postgres's `$1`, `$2`, ...; `%%` as `%`."""
    numbers = iter(range(1, sql.count("%s") + 1))
    return _PLACEHOLDER.sub(lambda m: "%" if m.group() == "%%" else f"${next(numbers)}", sql)


def execute(cur: psycopg2.extensions.cursor, sql: str, params: Sequence[Any] = ()) -> None:
    """`cur.execute(sql, params)` as a prepared statement, prepared on this connection the first
    time. For the statements every call runs; their parameters must not be tuples (`IN %s`: use
    `= ANY(%s)` with a list) and each must have a type Postgres can infer from where it stands.
    A PREPARE is not undone by a rollback, so a statement is prepared once per connection."""
    prepared = getattr(cur.connection, "prepared", None)
    if prepared is None:  # a plain connection, or preparing is off
        cur.execute(sql, params)
        return
    name = prepared.get(sql)
    if name is None:
        name = f"bc_{len(prepared)}"
        cur.execute(f"PREPARE {name} AS {_numbered(sql)}")
        prepared[sql] = name
    if params:
        cur.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)
    else:
        cur.execute(f"EXECUTE {name}")


def _pool(dsn: str, *, prepare: bool = True) -> psycopg2.pool.ThreadedConnectionPool:
    key = (os.getpid(), dsn, prepare)
    pool = _pools.get(key)
    if pool is None:
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                factory = PreparingConnection if prepare else psycopg2.extensions.connection
                pool = psycopg2.pool.ThreadedConnectionPool(0, 16, dsn=dsn, connection_factory=factory)
                # psycopg2 keeps at most `minconn` idle connections and closes every other one
                # it is given back: with 0, each transaction paid for a new connection (a new
                # server process), most of a call's cost. Raised after construction so that
                # none is opened before it is needed.
                pool.minconn = IDLE_CONNECTIONS
                _pools[key] = pool
    return pool


def _stale(conn: psycopg2.extensions.connection) -> bool:
    """True when an idle pooled connection has something to read: the server closed it (its
    FATAL message or EOF). A healthy idle connection has nothing to say."""
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _checkout(
    dsn: str, *, prepare: bool
) -> tuple[psycopg2.pool.ThreadedConnectionPool, psycopg2.extensions.connection]:
    pool = _pool(dsn, prepare=prepare)
    conn = pool.getconn()
    if _stale(conn):
        pool.putconn(conn, close=True)
        _drop_pool(dsn)  # the server went away: every pooled connection is as dead as this one
        pool = _pool(dsn, prepare=prepare)
        conn = pool.getconn()
    return pool, conn


def _stale_plan(exc: psycopg2.Error) -> bool:
    """A prepared `SELECT *` whose table changed shape under it (a migration while running)."""
    return exc.pgcode == "0A000" and "cached plan" in str(exc)


def _retry_on_new_connections(exc: psycopg2.Error) -> psycopg2.OperationalError:
    """Every pooled connection holds the outdated plans: the caller drops them all and raises
    this transient error, which a task retries (as after a restart) on new connections."""
    return psycopg2.OperationalError(f"prepared statements outdated by a schema change: {exc}")


class Database:
    """Gives transactions on one PostgreSQL database."""

    def __init__(self, dsn: str, *, prepare: bool = True) -> None:
        self.dsn = dsn
        self.prepare = prepare

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """A cursor in one transaction: committed on success, rolled back on any error."""
        pool, conn = _checkout(self.dsn, prepare=self.prepare)
        broken = False
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
            conn.commit()
        except psycopg2.Error as exc:
            broken = conn.closed != 0
            if not broken:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    broken = True
            if _stale_plan(exc):
                broken = True
                raise _retry_on_new_connections(exc) from exc
            raise
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        finally:
            pool.putconn(conn, close=broken or conn.closed != 0)
            if broken:
                # The server went away (a restart): every pooled connection is as dead as this one.
                _drop_pool(self.dsn)

    @contextmanager
    def autocommit(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """A cursor whose every statement commits by itself: one round trip for a write of one
        statement, where a transaction takes three (BEGIN, the statement, COMMIT)."""
        pool, conn = _checkout(self.dsn, prepare=self.prepare)
        broken = False
        conn.autocommit = True
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
        except psycopg2.Error as exc:
            broken = conn.closed != 0
            if _stale_plan(exc):
                broken = True
                raise _retry_on_new_connections(exc) from exc
            raise
        finally:
            if not conn.closed:
                conn.autocommit = False
            pool.putconn(conn, close=broken or conn.closed != 0)
            if broken:
                _drop_pool(self.dsn)

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A raw connection (for COPY); the caller commits."""
        pool, conn = _checkout(self.dsn, prepare=self.prepare)
        try:
            yield conn
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        finally:
            pool.putconn(conn, close=conn.closed != 0)


def _drop_pool(dsn: str) -> None:
    with _lock:
        dropped = [_pools.pop(key) for key in list(_pools) if key[:2] == (os.getpid(), dsn)]
    for pool in dropped:
        pool.closeall()


def close_pools() -> None:
    for key, pool in list(_pools.items()):
        if key[0] == os.getpid():
            pool.closeall()
            del _pools[key]
