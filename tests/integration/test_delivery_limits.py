"""What a callback receiver can do to the relay, over real sockets: answer a gigabyte, answer one
byte at a time, or have its name resolve first to a public address and then to loopback. The
relay reads at most 64 KB of a reply, gives a POST a wall-clock deadline, and connects to the
address it checked, keeping the URL's Host and TLS server name."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import socket
import ssl
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from batchcalls.adapters.delivery import relay as delivery
from batchcalls.adapters.delivery.http import REPLY_LIMIT, CallbackHTTP
from batchcalls.adapters.delivery.leases import DeliveryLeases
from batchcalls.adapters.delivery.relay import Relay
from batchcalls.adapters.redis_keys import relay_keys
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.store.tenants import create_key
from batchcalls.domain import voices
from batchcalls.domain.validation import build_batch
from batchcalls.engine.reconciler import reconcile
from config.settings import Settings
from tests.support.bad_receivers import RawServer, huge, ok, start_raw_server, trickle
from tests.support.engine import engine_on
from tests.support.servers import TestServers

pytestmark = pytest.mark.integration

EVENT = {"id": "evt_test", "type": "batch.started", "batch_id": "b", "data": {}}


def _settings(
    redis_url: str = "redis://unused",
    *,
    timeout: float = 1.0,
    allowlist: tuple[str, ...] = ("127.0.0.1",),
    **extra: object,
) -> Settings:
    return Settings(
        database_url="postgresql://unused",
        redis_url=redis_url,
        webhook_timeout_seconds=timeout,
        allow_http_callbacks=True,
        callback_allowlist=allowlist,
        **extra,
    )  # type: ignore[arg-type]


def _relay(settings: Settings, **kwargs: object) -> Relay:
    return Relay(settings, Database("postgresql://unused"), redis.Redis.from_url("redis://127.0.0.1:1"), **kwargs)  # type: ignore[arg-type]


def _post(relay: Relay, url: str) -> str | None:
    deadline = time.monotonic() + relay.settings.webhook_timeout_seconds
    return relay.poster.post(url, ("whsec_dGVzdA==",), "evt_test", EVENT, deadline=deadline)


@pytest.fixture
def servers_to_stop() -> Iterator[list[RawServer]]:
    started: list[RawServer] = []
    yield started
    for server in started:
        server.stop()


def test_a_reply_of_200_mb_costs_the_relay_at_most_64_kb(servers_to_stop: list[RawServer]) -> None:
    server = start_raw_server(huge(200 * 1024 * 1024))
    servers_to_stop.append(server)
    relay = _relay(_settings(timeout=20))
    tracemalloc.start()
    try:
        error = _post(relay, server.url())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak allocated during the POST: {peak / 1e6:.2f} MB; the receiver sent {server.bytes_sent / 1e6:.1f} MB")
    assert error is None  # a 2xx status is a delivery, whatever follows it
    assert peak < 4 * 1024 * 1024
    assert len(server.requests) == 1
    # And the connection was given up, not read on: the receiver could not send much more than
    # what the sockets' buffers hold.
    deadline = time.time() + 10
    while server.cut_off < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert server.cut_off == 1 and server.bytes_sent < 50 * 1024 * 1024


def test_a_short_reply_keeps_the_connection_for_the_next_event(servers_to_stop: list[RawServer]) -> None:
    server = start_raw_server(huge(REPLY_LIMIT))  # the most that is read whole
    servers_to_stop.append(server)
    relay = _relay(_settings())
    assert [_post(relay, server.url()) for _ in range(3)] == [None, None, None]
    assert server.connections == 1 and len(server.requests) == 3


@pytest.mark.parametrize("over_tls", [False, True], ids=["http", "https"])
def test_a_receiver_answering_a_byte_at_a_time_is_cut_at_the_deadline(
    servers_to_stop: list[RawServer], tmp_path: Path, over_tls: bool
) -> None:
    # A byte every 50 ms: every read gets something long before a per-read timeout, for ever.
    tls, client = _tls(tmp_path, "127.0.0.1") if over_tls else (None, CallbackHTTP())
    server = start_raw_server(trickle(0.05), tls=tls)
    servers_to_stop.append(server)
    relay = _relay(_settings(timeout=1.0), http=client)
    ended: list[str | None] = []
    poster = threading.Thread(target=lambda: ended.append(_post(relay, server.url())), daemon=True)
    poster.start()
    poster.join(timeout=120)  # only a guard against hanging the run: the receiver never stops by itself
    cut_by_the_relay = not poster.is_alive()
    server.stop()  # the trickle ends here: a POST that ends only now was never cut
    poster.join(timeout=30)
    assert cut_by_the_relay, "the POST went on for as long as the receiver answered"
    (error,) = ended
    assert error is not None and "timed out" in error.lower()


def test_a_name_that_rebinds_to_loopback_after_the_check_never_reaches_loopback(
    servers_to_stop: list[RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A loopback server on a port a public host may use, so that only the address decides.
    loopback = _bind_web_port("127.0.0.2")
    servers_to_stop.append(loopback)
    answers = iter(["6.6.6.6"] + ["127.0.0.2"] * 10)  # public (and unrouted) first, loopback after

    def rebinding(host: str, port: int) -> list[str]:
        assert host == "rebind.example"
        return [next(answers)]

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        # The system resolver rebinds too, for any client that would resolve the name itself.
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            address = rebinding(host, int(port))[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr("socket.getaddrinfo", getaddrinfo)
    relay = _relay(_settings(timeout=1.0, allowlist=()), resolve=rebinding)
    error = _post(relay, f"http://rebind.example:{loopback.port}/hooks")
    assert error is not None  # 6.6.6.6 does not answer
    assert loopback.connections == 0 and loopback.requests == []


def test_tls_goes_to_the_checked_address_with_the_urls_host_and_server_name(
    servers_to_stop: list[RawServer], tmp_path: Path
) -> None:
    tls, client = _tls(tmp_path, "hooks.pinned.test")
    server = start_raw_server(ok(), tls=tls)
    servers_to_stop.append(server)
    resolved: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    relay = _relay(_settings(allowlist=("127.0.0.1",)), http=client, resolve=resolve)
    assert _post(relay, server.url("hooks.pinned.test", "/in?token=t")) is None
    request = server.requests[-1]
    assert request.head == "POST /in?token=t HTTP/1.1"
    assert request.headers["host"] == f"hooks.pinned.test:{server.port}"
    assert request.server_name == "hooks.pinned.test"
    assert resolved == ["hooks.pinned.test"]  # once, by the check
    # The certificate is checked against the URL's host, not the address connected to.
    error = _post(relay, server.url("other.pinned.test"))
    assert error is not None and "certificate" in error.lower()


def test_an_address_that_refuses_the_connection_gives_way_to_the_next_checked_one(
    servers_to_stop: list[RawServer],
) -> None:
    server = start_raw_server(ok())
    servers_to_stop.append(server)
    relay = _relay(
        _settings(allowlist=("127.0.0.0/8",)), resolve=lambda host, port: ["127.0.0.2", "127.0.0.1"]
    )  # nothing listens on the first
    assert _post(relay, server.url("two.example.test")) is None
    assert server.requests[0].headers["host"] == f"two.example.test:{server.port}"


def test_the_relay_lock_outlives_every_post(
    servers: TestServers, servers_to_stop: list[RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST to a receiver that never finishes its answer ends while the relay still holds the
    batch's lock: no second relay can take the batch while the first one still writes to it."""
    monkeypatch.setattr(delivery, "LOCK_MARGIN_SECONDS", 0.6)
    server = start_raw_server(trickle(0.05))
    servers_to_stop.append(server)
    client = redis.Redis.from_url(servers.redis_url)
    relay = Relay(_settings(servers.redis_url, timeout=0.6), Database("postgresql://unused"), client)
    batch_id = "lock-" + uuid.uuid4().hex[:8]
    lock_key = relay_keys(batch_id)[0]
    lock = client.lock(lock_key, timeout=0.6 + 0.6, thread_local=False)
    assert lock.acquire(blocking=False)
    held = delivery._Held(lock, time.monotonic())
    assert held.still_ours()
    error = _post(relay, server.url())
    assert error is not None
    assert client.get(lock_key) == lock.local.token, "the lock ran out while the POST still ran"
    lock.release()


def test_a_tenant_holds_at_most_its_share_of_deliveries(servers: TestServers) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    tenant = int(time.time() * 1000) % 1_000_000_000
    leases = DeliveryLeases(client, limit=2, lease_seconds=0.5)
    assert leases.take(tenant, "a") and leases.take(tenant, "b")
    assert not leases.take(tenant, "c")
    assert leases.take(tenant, "a")  # renewing is not taking another
    assert leases.take(tenant + 1, "c")  # another tenant's share is its own
    leases.give_back(tenant, "b")
    assert leases.take(tenant, "c")
    # A holder that dies without giving its lease back: its share comes back when it runs out.
    deadline = time.time() + 10
    while not leases.take(tenant, "d"):
        assert time.time() < deadline, "an expired lease was never given back"
        time.sleep(0.05)
    assert leases.held(tenant) <= 2


def test_a_freed_share_goes_to_the_batch_that_waited_for_it(servers: TestServers) -> None:
    """A batch refused its tenant's share gets the next one freed, before a batch that had one
    and comes back sooner (one retry each, a waiting batch asks only every second or two)."""
    client = redis.Redis.from_url(servers.redis_url)
    tenant = int(time.time() * 1000) % 1_000_000_000 + 7
    leases = DeliveryLeases(client, limit=2, lease_seconds=10)
    assert leases.take(tenant, "a1", waiter="A") and leases.take(tenant, "b1", waiter="B")
    assert not leases.take(tenant, "c1", waiter="C")  # C waits: it is next in line
    leases.give_back(tenant, "a1")
    assert not leases.take(tenant, "a2", waiter="A")  # back sooner, but the free share is C's
    assert leases.take(tenant, "c2", waiter="C")
    leases.give_back(tenant, "b1")
    assert leases.take(tenant, "a3", waiter="A")  # A waited next: the share B gave back is A's
    assert leases.held(tenant) == 2


# -- helpers ------------------------------------------------------------------------------------


def _bind_web_port(host: str) -> RawServer:
    for port in (8080, 8443, 80, 443):
        try:
            return start_raw_server(ok(), host=host, port=port)
        except OSError:
            continue
    pytest.skip(f"no web port free on {host}")


def _tls(directory: Path, name: str) -> tuple[ssl.SSLContext, CallbackHTTP]:
    """A server context with a self-signed certificate for `name` (a DNS name or an IP), and a
    delivery client that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt = x509.DNSName(name)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "receiver.crt", directory / "receiver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return server, CallbackHTTP(ssl_context=ssl.create_default_context(cafile=str(cert_path)))


def test_a_batch_whose_tenant_is_at_its_limit_waits_and_is_delivered_after(
    servers: TestServers, servers_to_stop: list[RawServer]
) -> None:
    """The relay of a tenant already running its share of deliveries POSTs nothing, counts no
    failed attempt, and asks to be run again shortly; once a share is free it delivers."""
    receiver = start_raw_server(ok())
    servers_to_stop.append(receiver)
    with engine_on(servers) as engine:
        tenant, _ = create_key(engine.db, "tenant-share-" + uuid.uuid4().hex[:6])
        body = {
            "calls": [{"phone_number": "+442079460001", "script": {"text": "Hi"}}],
            "concurrency": 1,
            "callback_url": receiver.url(),
        }
        batch_id, _ = engine.submit(
            tenant, build_batch(body, max_concurrency=10, voices=voices.voice_catalog()), None, body
        )
        engine.dispatch(batch_id)
        engine.place_call(engine.tasks.places[0], batch_id=batch_id)  # type: ignore[attr-defined]
        settings = dataclasses.replace(
            engine.settings, allow_http_callbacks=True, callback_allowlist=("127.0.0.1",), webhook_tenant_concurrency=2
        )
        relay = Relay(settings, engine.db, engine.gates.redis)
        others = [relay.leases.take(tenant.id, f"other-{i}") for i in range(2)]
        assert others == [True, True]

        outcome = relay.run(batch_id)
        assert outcome.delivered == 0 and outcome.retry_in is not None and outcome.retry_in <= 2
        assert receiver.requests == []
        with engine.db.transaction() as cur:
            cur.execute("SELECT delivery_attempts, last_error FROM events WHERE batch_id = %s", (batch_id,))
            assert [tuple(row.values()) for row in cur.fetchall()] == [(0, None)]

        relay.leases.give_back(tenant.id, "other-0")
        assert relay.run(batch_id).delivered == 1
        assert [e["type"] for e in receiver.events(batch_id)] == ["batch.started"]
        assert relay.leases.held(tenant.id) == 1  # its own share given back, the other one kept


def test_an_address_that_never_answers_gives_way_to_the_next_checked_one(servers_to_stop: list[RawServer]) -> None:
    """A first address that swallows the connect (its listen backlog is full: the SYN is
    dropped, as on a black-holed route) leaves the next address time to take the event."""
    server = start_raw_server(ok())
    servers_to_stop.append(server)
    with _silent_listener("127.0.0.2", server.port):
        relay = _relay(
            _settings(timeout=3.0, allowlist=("127.0.0.0/8",)), resolve=lambda host, port: ["127.0.0.2", "127.0.0.1"]
        )
        assert _post(relay, server.url("two.example.test")) is None
        assert len(server.requests) == 1


@contextlib.contextmanager
def _silent_listener(host: str, port: int) -> Iterator[None]:
    """A listening socket nobody accepts on, its backlog filled: a connect to it is never answered."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind((host, port))
        listener.listen(0)
        # Fill the backlog until a connect is no longer answered.
        for _ in range(16):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.settimeout(0.3)
            try:
                filler.connect((host, port))
            except TimeoutError:
                break
        else:
            pytest.skip("could not fill a listen backlog on this system")
        yield
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_a_slow_resolving_callback_host_waits_for_its_tenants_share_and_the_deadline(servers: TestServers) -> None:
    """The callback host is resolved only under the tenant's delivery lease, and within the POST's
    deadline: a name that never resolves costs one failed attempt at the webhook timeout, retried
    later, and a tenant at its share resolves nothing."""
    release = threading.Event()
    held_while_resolving: list[int] = []
    with engine_on(servers) as engine:
        tenant, _ = create_key(engine.db, "tenant-dns-" + uuid.uuid4().hex[:6])
        body = {
            "calls": [{"phone_number": "+442079460001", "script": {"text": "Hi"}}],
            "concurrency": 1,
            "callback_url": "http://slow-dns.example.test/hooks",
        }
        batch_id, _ = engine.submit(
            tenant, build_batch(body, max_concurrency=10, voices=voices.voice_catalog()), None, body
        )
        engine.dispatch(batch_id)
        engine.place_call(engine.tasks.places[0], batch_id=batch_id)  # type: ignore[attr-defined]
        settings = dataclasses.replace(
            engine.settings,
            allow_http_callbacks=True,
            callback_allowlist=(),
            webhook_tenant_concurrency=1,
            webhook_timeout_seconds=1.0,
        )

        def never_resolves(host: str, port: int) -> list[str]:
            held_while_resolving.append(relay.leases.held(tenant.id))
            release.wait(60)
            raise OSError("released by the test")

        relay = Relay(settings, engine.db, engine.gates.redis, resolve=never_resolves)
        try:
            # The tenant's share is taken: nothing is resolved (nor posted, nor counted).
            assert relay.leases.take(tenant.id, "other")
            assert relay.run(batch_id).retry_in is not None
            assert held_while_resolving == []
            relay.leases.give_back(tenant.id, "other")

            outcome: list[delivery.Outcome] = []
            runner = threading.Thread(target=lambda: outcome.append(relay.run(batch_id)), daemon=True)
            runner.start()
            runner.join(30)  # the deadline is 1 s; generous for a busy machine
            assert outcome, "the relay waited on the resolver past the webhook deadline"
            assert held_while_resolving == [1]  # resolved under the tenant's lease
            assert outcome[0].delivered == 0 and outcome[0].retry_in is not None
            with engine.db.transaction() as cur:
                cur.execute("SELECT delivery_attempts, last_error FROM events WHERE batch_id = %s", (batch_id,))
                rows = [tuple(row.values()) for row in cur.fetchall()]
            assert rows == [(1, "callback host did not resolve within the webhook timeout")]
            assert relay.leases.held(tenant.id) == 0  # given back when the relay let go
        finally:
            release.set()


def test_batches_waiting_for_their_tenants_share_keep_one_retry_each(servers: TestServers) -> None:
    """Batches whose tenant's share is taken come back about once per retry interval each: a
    run that finds the share full schedules one retry, and neither the sweep (every second here)
    nor a second run adds another chain of `deliver` tasks next to it."""
    batches_waiting, seconds = 3, 6.0
    with engine_on(servers) as engine:
        tenant, _ = create_key(engine.db, "tenant-chains-" + uuid.uuid4().hex[:6])
        body = {
            "calls": [{"phone_number": "+442079460001", "script": {"text": "Hi"}}],
            "concurrency": 1,
            "callback_url": "http://127.0.0.1:9/hooks",
        }
        for _ in range(batches_waiting):
            batch_id, _ = engine.submit(
                tenant, build_batch(body, max_concurrency=10, voices=voices.voice_catalog()), None, body
            )
            engine.dispatch(batch_id)
            engine.place_call(engine.tasks.places[-1], batch_id=batch_id)  # type: ignore[attr-defined]
        settings = dataclasses.replace(
            engine.settings, allow_http_callbacks=True, callback_allowlist=("127.0.0.1",), webhook_tenant_concurrency=1
        )
        relay = Relay(settings, engine.db, engine.gates.redis)
        sent: list[tuple[str, float]] = engine.tasks.delivers  # type: ignore[attr-defined]
        queued: list[tuple[float, str]] = []  # (when due, batch): the `deliver` tasks not yet run
        runs: list[float] = []
        most_queued = 0
        started = next_sweep = time.monotonic()
        while time.monotonic() < started + seconds:
            assert relay.leases.take(tenant.id, "another batch")  # the tenant's share stays taken
            now = time.monotonic()
            if now >= next_sweep:
                reconcile(engine)
                next_sweep = now + 1.0
            queued += [(now + countdown, batch_id) for batch_id, countdown in sent]
            sent.clear()
            most_queued = max(most_queued, len(queued))
            for task in [task for task in queued if task[0] <= now]:
                queued.remove(task)
                engine.deliver(relay, task[1])
                runs.append(time.monotonic() - started)
            queued += [(time.monotonic() + countdown, batch_id) for batch_id, countdown in sent]
            sent.clear()
            most_queued = max(most_queued, len(queued))
            # A scheduler's clock: on to the next due task or sweep (new sends come from those).
            next_due = min([next_sweep, started + seconds, *(due for due, _ in queued)])
            time.sleep(max(0.0, next_due - time.monotonic()))
    late_runs = [t for t in runs if t >= seconds / 2]
    print(
        f"{len(runs)} runs in {seconds:.0f} s, {len(late_runs)} in the last {seconds / 2:.0f} s;"
        f" at most {most_queued} tasks queued"
    )
    # A retry comes 1 to 2 s after a run: one chain per batch runs at most once a second.
    assert len(late_runs) <= batches_waiting * (seconds / 2 + 1)
    assert most_queued <= 2 * batches_waiting  # a sweep may send one in the moment a retry starts
    assert {batch_id for _, batch_id in queued} and len({batch_id for _, batch_id in queued}) == batches_waiting
