"""PostgreSQL connections (psycopg2) and the transaction helper every repository uses.

One small pool per process, created lazily after fork. A dropped connection (Postgres restart)
is discarded, and the caller's task retries the whole transaction.
"""

from __future__ import annotations

import os
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


def _pool(dsn: str) -> psycopg2.pool.ThreadedConnectionPool:
    key = (os.getpid(), dsn)
    pool = _pools.get(key)
    if pool is None:
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = psycopg2.pool.ThreadedConnectionPool(0, 16, dsn=dsn)
                _pools[key] = pool
    return pool


class Database:
    """Gives transactions on one PostgreSQL database."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """A cursor in one transaction: committed on success, rolled back on any error."""
        pool = _pool(self.dsn)
        conn = pool.getconn()
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
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A raw connection (for COPY); the caller commits."""
        pool = _pool(self.dsn)
        conn = pool.getconn()
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
