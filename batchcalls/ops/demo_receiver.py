"""A local webhook receiver for `batchcalls demo`: it verifies each event's signature, as a CRM
would, and hands the events over in the order they arrived."""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from batchcalls.domain.signing import verify_batchcalls_signature


class LocalReceiver:
    def __init__(self, webhook_secret: str) -> None:
        self.events: queue.Queue[tuple[dict[str, Any], bool]] = queue.Queue()
        secret = webhook_secret
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                verified = verify_batchcalls_signature(
                    secret, self.headers.get("Batchcalls-Signature", ""), body, int(time.time())
                )
                events.put((json.loads(body), verified))
                self.send_response(204 if verified else 400)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/batchcalls-events"

    def drain(self) -> list[tuple[dict[str, Any], bool]]:
        found = []
        while True:
            try:
                found.append(self.events.get_nowait())
            except queue.Empty:
                return found

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
