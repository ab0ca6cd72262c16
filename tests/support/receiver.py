"""A callback receiver on 127.0.0.1 that records every event POSTed to it, with its headers,
and can be told to fail (answer 500) for a while."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    failing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def events(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            found = [r.event for r in self.received]
        return [e for e in found if batch_id is None or e["batch_id"] == batch_id]

    def records(self, batch_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.event["batch_id"] == batch_id]

    def wait_for(self, batch_id: str, types: set[str], timeout: float) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            events = self.events(batch_id)
            if any(e["type"] in types for e in events):
                return events
            time.sleep(0.1)
        raise AssertionError(
            f"no {types} event for {batch_id} within {timeout}s; got {[e['type'] for e in self.events(batch_id)]}"
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def go_down(self) -> None:
        """Close the listening socket: senders get connection refused."""
        self.stop()

    def come_back(self) -> None:
        """Listen again on the same port."""
        handler = self.server.RequestHandlerClass
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


def start_receiver() -> Receiver:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            receiver = holder["r"]
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if receiver.failing:
                with receiver.lock:
                    receiver.refused += 1
                self.send_response(500)
                self.end_headers()
                return
            with receiver.lock:
                receiver.received.append(Received(body, {k.lower(): v for k, v in self.headers.items()}, time.time()))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver
