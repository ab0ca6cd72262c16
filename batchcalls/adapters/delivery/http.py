"""HTTP for event delivery: one POST to a callback address already checked, within a wall-clock
deadline, reading at most `REPLY_LIMIT` bytes of the reply.

- **Pinned**: the connection goes to the address `batchcalls.adapters.delivery.targets` checked, never to a
  second resolution of the name (DNS rebinding); the request keeps the URL's `Host`, and TLS its
  server name (SNI) and the certificate check against the URL's host.
- **A deadline, not a timeout per read**: a socket timeout bounds each read, so a receiver that
  sends one byte a second holds a connection for ever. Here every socket operation (connect, TLS
  handshake, send, each read of the status line, headers and body) is given only the time left
  until the POST's deadline, and none starts after it.
- **A bounded reply**: the receiver's answer is streamed; past `REPLY_LIMIT` bytes the
  connection is closed instead of read on (a 1 GB answer costs 64 KB).

urllib3 (keep-alive pools, one per address, port and server name) with connection classes whose
sockets apply the deadline.
"""

from __future__ import annotations

import contextvars
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from batchcalls.adapters.delivery.targets import CallbackTarget

# The most of a receiver's reply read (and thrown away: only its status counts). A reply this
# short keeps the connection for the next event; a longer one costs a new connection.
REPLY_LIMIT = 64 * 1024

# The monotonic deadline of the POST running in this thread (None: no deadline, plain timeouts).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("callback_deadline", default=None)


class DeadlineExceeded(TimeoutError):
    """The POST's deadline passed (a socket timeout, so urllib3 reports it as one)."""


def _shrink_timeout(sock: socket.socket) -> None:
    """Give the next socket operation only the time left until the deadline. The C code of a
    socket or TLS operation (a handshake included) keeps its own deadline from the timeout it
    starts with, so one operation cannot outlast the time left either."""
    deadline = _deadline.get()
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the delivery deadline passed")
    sock.settimeout(left)


class _DeadlineSocket(socket.socket):
    def recv(self, *args: Any) -> bytes:
        _shrink_timeout(self)
        return super().recv(*args)

    def recv_into(self, *args: Any) -> int:
        _shrink_timeout(self)
        return super().recv_into(*args)

    def send(self, *args: Any) -> int:
        _shrink_timeout(self)
        return super().send(*args)

    def sendall(self, *args: Any) -> None:
        _shrink_timeout(self)  # since Python 3.5 the timeout bounds the whole of `sendall`
        super().sendall(*args)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """TLS reads (`recv`, `recv_into` and `read` all end in `read`), writes (`sendall` sends
    through `send`) and the handshake, each within the time left."""

    def do_handshake(self, *args: Any, **kwargs: Any) -> None:  # ssl's own (undocumented) parameters
        _shrink_timeout(self)
        super().do_handshake(*args, **kwargs)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002 - ssl's own names
        _shrink_timeout(self)
        return super().read(len, buffer)

    def send(self, data: Any, flags: int = 0) -> int:
        _shrink_timeout(self)
        return super().send(data, flags)


def _deadline_socket(sock: socket.socket) -> socket.socket:
    """The same connected socket (its file descriptor) as a `_DeadlineSocket`."""
    timeout = sock.gettimeout()
    wrapped = _DeadlineSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    wrapped.settimeout(timeout)
    return wrapped


class _Connection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _deadline_socket(super()._new_conn())


class _TLSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _deadline_socket(super()._new_conn())


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class CallbackHTTP:
    """POSTs to checked callback targets. `ssl_context` (tests: one trusting a test CA) is used
    as given, apart from its socket class; by default the system's CAs verify receivers."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, num_pools: int = 32) -> None:
        context = ssl_context or ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        # No retries or redirects: the relay retries itself, and a redirect is refused (it would
        # lead to a host nobody checked).
        self.pools = urllib3.PoolManager(num_pools=num_pools, retries=False, ssl_context=context)
        self.pools.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}

    def post(
        self, target: CallbackTarget, addresses: Sequence[str], body: bytes, headers: dict[str, str], *, timeout: float
    ) -> int:
        """POST `body` to `target` through a connection to the first of `addresses` (checked ones)
        that accepts one, all of it within `timeout` seconds from now; the reply's status. Each
        address's connect gets its share of the time left (half of it for the first of two), the
        last one all of it.
        Raises urllib3's errors (`urllib3.exceptions.HTTPError`), OSError or ValueError when no
        status arrived in time."""
        deadline = time.monotonic() + timeout
        token = _deadline.set(deadline)
        try:
            for i, address in enumerate(addresses):
                try:
                    return self._post_to(
                        target,
                        address,
                        body,
                        {**headers, "Host": target.host_header},
                        deadline,
                        addresses_left=len(addresses) - i,
                    )
                except urllib3.exceptions.ConnectTimeoutError:
                    # Refused, unreachable or silent (NewConnectionError is a ConnectTimeoutError):
                    # nothing was sent, so the next address (e.g. IPv4 after an unreachable IPv6)
                    # gets the time left.
                    if i == len(addresses) - 1:
                        raise
            raise ValueError("no address to connect to")
        finally:
            _deadline.reset(token)

    def _post_to(
        self,
        target: CallbackTarget,
        address: str,
        body: bytes,
        headers: dict[str, str],
        deadline: float,
        *,
        addresses_left: int = 1,
    ) -> int:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the delivery deadline passed")
        # A connect may take only this address's share of the time left: one that never answers
        # (a black-holed address, a full backlog) must leave the next addresses time to connect.
        connect = left / max(addresses_left, 1)
        pool_kwargs = {"server_hostname": target.host} if target.scheme == "https" else None
        pool = self.pools.connection_from_host(address, target.port, target.scheme, pool_kwargs=pool_kwargs)
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            release_conn=False,
            timeout=urllib3.Timeout(connect=connect, read=left),
        )
        complete = False
        try:
            complete = _read_reply(response)
        except (urllib3.exceptions.HTTPError, OSError):
            pass  # the status arrived: what the reply says after it does not change the outcome
        finally:
            if not complete:
                response.close()  # the rest is never read: this connection cannot serve another POST
            response.release_conn()
        return int(response.status)


def _read_reply(response: urllib3.BaseHTTPResponse) -> bool:
    """Read and drop at most REPLY_LIMIT bytes of the reply; True when that was all of it."""
    read = 0
    while read <= REPLY_LIMIT:
        chunk = response.read(REPLY_LIMIT + 1 - read, decode_content=False)
        if not chunk:
            return True
        read += len(chunk)
    return False
