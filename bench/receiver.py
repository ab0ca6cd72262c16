"""A callback receiver for the benchmark: answers 204 at once over keep-alive HTTP/1.1 (as a
production receiver would) and notes when each event type of each batch first arrived."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TERMINAL = ("batch.completed", "batch.failed")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A relay whose worker is stopped between scenarios drops its keep-alive connection:
        not worth a traceback in the benchmark's output."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.first: dict[tuple[str, str], float] = {}  # (batch id, type) -> first arrival
        self.counts: Counter[tuple[str, str]] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()
                try:
                    event = json.loads(body)
                    key = (str(event["batch_id"]), str(event["type"]))
                except (ValueError, KeyError, TypeError):
                    key = ("?", "?")
                with receiver.lock:
                    receiver.first.setdefault(key, at)
                    receiver.counts[key] += 1
                    if key[1] in TERMINAL:
                        receiver.lock.notify_all()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def wait_terminal(self, batch_id: str, timeout: float) -> tuple[str, float]:
        """(terminal event type, when it first arrived) of a batch."""
        deadline = time.time() + timeout
        with self.lock:
            while True:
                for kind in TERMINAL:
                    at = self.first.get((batch_id, kind))
                    if at is not None:
                        return kind, at
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"no terminal event for {batch_id} within {timeout:.0f}s")
                self.lock.wait(min(left, 1.0))

    def count(self, batch_id: str, kind: str) -> int:
        with self.lock:
            return self.counts[(batch_id, kind)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
