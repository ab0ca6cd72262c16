"""Callback receivers that misbehave, on raw sockets (http.server would not let a handler answer
one byte at a time): one that answers a byte every `interval` seconds for as long as the sender
waits, one that answers a body of any size (made lazily, never held in memory), each over plain
TCP or TLS. Each records the requests it read and what it sent."""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    head: str
    headers: dict[str, str]
    body: bytes
    server_name: str | None  # TLS SNI, when over TLS

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class RawServer:
    sock: socket.socket
    tls: ssl.SSLContext | None
    answer: Callable[[socket.socket, RawServer], None]
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    spans: list[tuple[float, float]] = field(default_factory=list)  # each connection: (opened, closed)
    bytes_sent: int = 0
    cut_off: int = 0  # answers the sender stopped reading before they were complete
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)
    sni: threading.local = field(default_factory=threading.local)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def url(self, host: str = "127.0.0.1", path: str = "/hooks") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def events(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            found = [r.event for r in self.requests]
        return [e for e in found if batch_id is None or e["batch_id"] == batch_id]

    def sent(self, data: bytes, conn: socket.socket) -> None:
        conn.sendall(data)
        with self.lock:
            self.bytes_sent += len(data)

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def most_at_once(self, slack: float = 0.0) -> int:
        """The most connections that were open at the same time, each counted as closed `slack`
        seconds before the server saw it close (the server notices a hang-up a little late)."""
        with self.lock:
            edges = sorted(
                [(opened, 1) for opened, _ in self.spans]
                + [(max(opened, closed - slack), -1) for opened, closed in self.spans],
                key=lambda edge: (edge[0], edge[1]),
            )
        live = most = 0
        for _, step in edges:
            live += step
            most = max(most, live)
        return most

    def _connection(self, conn: socket.socket) -> None:
        opened = time.time()
        try:
            if self.tls is not None:
                conn.settimeout(10)
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(None)
            while not self.stopped.is_set():
                request = _read_request(conn)
                if request is None:
                    return
                request.server_name = getattr(self.sni, "name", None)
                with self.lock:
                    self.requests.append(request)
                self.answer(conn, self)
        except OSError:
            with self.lock:
                self.cut_off += 1
        finally:
            conn.close()
            with self.lock:
                self.spans.append((opened, time.time()))


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return Request(lines[0], headers, rest[:length], None)


def start_raw_server(
    answer: Callable[[socket.socket, RawServer], None],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ssl.SSLContext | None = None,
) -> RawServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    server = RawServer(sock, tls, answer)
    if tls is not None:

        def remember(ssl_sock: Any, name: str | None, context: Any) -> None:
            server.sni.name = name

        tls.sni_callback = remember
    threading.Thread(target=server._serve, daemon=True).start()
    return server


def _wait_unless_hung_up(conn: socket.socket, seconds: float) -> bool:
    """Wait `seconds`; False as soon as the sender hangs up. The sender sends nothing more while
    it waits for the answer, so anything to read is its hang-up (over TLS, its close_notify or
    the connection's end: a TLS socket cannot peek)."""
    readable, _, _ = select.select([conn], [], [], seconds)
    if not readable:
        return True
    return not isinstance(conn, ssl.SSLSocket) and conn.recv(1, socket.MSG_PEEK) != b""


def trickle(interval: float) -> Callable[[socket.socket, RawServer], None]:
    """Answer `200` one byte every `interval` seconds, a header line after another, for ever
    (until the sender hangs up or the server stops)."""

    def answer(conn: socket.socket, server: RawServer) -> None:
        reply = b"HTTP/1.1 200 OK\r\n"
        n = 0
        while not server.stopped.is_set():
            for byte in reply:
                server.sent(bytes([byte]), conn)
                if not _wait_unless_hung_up(conn, interval):
                    return
            n += 1
            reply = f"X-Slow-{n}: 1\r\n".encode()

    return answer


def huge(size: int, chunk: int = 256 * 1024, status: str = "200 OK") -> Callable[[socket.socket, RawServer], None]:
    """Answer `status` with a body of `size` bytes, sent as fast as the sender reads it."""
    block = b"x" * chunk

    def answer(conn: socket.socket, server: RawServer) -> None:
        server.sent(f"HTTP/1.1 {status}\r\nContent-Length: {size}\r\nContent-Type: text/plain\r\n\r\n".encode(), conn)
        left = size
        while left > 0 and not server.stopped.is_set():
            piece = block[: min(left, chunk)]
            server.sent(piece, conn)
            left -= len(piece)

    return answer


def ok() -> Callable[[socket.socket, RawServer], None]:
    def answer(conn: socket.socket, server: RawServer) -> None:
        server.sent(b"HTTP/1.1 204 No Content\r\n\r\n", conn)

    return answer
