"""PostgreSQL connections (psycopg2) and the transaction helper every repository uses.

One small pool per process, created lazily after fork; idle connections are reused. A pooled
connection the server closed (a Postgres restart) is noticed before use and replaced; one that
drops mid-transaction is discarded, and the caller's task retries the whole transaction.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool

_pools: dict[tuple[int, str], psycopg2.pool.ThreadedConnectionPool] = {}
_lock = threading.Lock()

Cursor = psycopg2.extras.RealDictCursor

IDLE_CONNECTIONS = 4  # idle connections each process keeps for reuse


def _pool(dsn: str) -> psycopg2.pool.ThreadedConnectionPool:
    key = (os.getpid(), dsn)
    pool = _pools.get(key)
    if pool is None:
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = psycopg2.pool.ThreadedConnectionPool(0, 16, dsn=dsn)
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


def _checkout(dsn: str) -> tuple[psycopg2.pool.ThreadedConnectionPool, psycopg2.extensions.connection]:
    pool = _pool(dsn)
    conn = pool.getconn()
    if _stale(conn):
        pool.putconn(conn, close=True)
        _drop_pool(dsn)  # the server went away: every pooled connection is as dead as this one
        pool = _pool(dsn)
        conn = pool.getconn()
    return pool, conn


class Database:
    """Gives transactions on one PostgreSQL database."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """A cursor in one transaction: committed on success, rolled back on any error."""
        pool, conn = _checkout(self.dsn)
        broken = False
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
            conn.commit()
        except psycopg2.Error:
            broken = conn.closed != 0
            if not broken:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    broken = True
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
        pool, conn = _checkout(self.dsn)
        broken = False
        conn.autocommit = True
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
        except psycopg2.Error:
            broken = conn.closed != 0
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
        pool, conn = _checkout(self.dsn)
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
        pool = _pools.pop((os.getpid(), dsn), None)
    if pool is not None:
        pool.closeall()


def close_pools() -> None:
    for key, pool in list(_pools.items()):
        if key[0] == os.getpid():
            pool.closeall()
            del _pools[key]
