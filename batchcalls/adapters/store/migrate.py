"""Versioned schema migrations: `migrations/NNNN_name.sql`, applied in order, once each."""

from __future__ import annotations

from importlib import resources

import psycopg2

_LOCK_ID = 0x6261746368  # pg_advisory_xact_lock key: one migrator at a time


def available() -> list[tuple[int, str, str]]:
    files = resources.files("batchcalls.adapters.store").joinpath("migrations")
    found = []
    for entry in files.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def upgrade(dsn: str) -> list[str]:
    """Apply every migration not yet applied; return the names applied now."""
    applied_now = []
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for version, name, sql in available():
                if version in done:
                    continue
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied_now.append(name)
    finally:
        conn.close()
    return applied_now
