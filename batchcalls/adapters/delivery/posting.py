"""One webhook POST: the callback URL checked and its host resolved, the event signed, and the
answer turned into None (delivered) or a short account of what went wrong."""

from __future__ import annotations

import json
import time
from typing import Any

import urllib3

from batchcalls.adapters.delivery.http import CallbackHTTP
from batchcalls.adapters.delivery.targets import (
    CallbackTarget,
    Resolver,
    ResolveTimeout,
    check_callback_url,
    connect_addresses,
    default_resolve,
    resolver_until,
)
from batchcalls.domain.errors import InvalidRequest
from batchcalls.domain.signing import signature_headers
from config.settings import Settings


class EventPoster:
    def __init__(
        self, settings: Settings, http: CallbackHTTP | None = None, *, resolve: Resolver = default_resolve
    ) -> None:
        self.settings = settings
        # urllib3 (what requests is built on) without requests' per-request layers: a relay
        # POSTs one event after another, and requests spent more time than the receiver did.
        # Keep-alive, pinned to the checked address, within a deadline, a bounded reply.
        self.http = http or CallbackHTTP()
        # Resolves callback hosts for the check; the POST goes to an address it approved.
        self.resolve = resolve

    def post(
        self, url: str, secrets: tuple[str, ...], event_id: str, payload: dict[str, Any], *, deadline: float
    ) -> str | None:
        """POST one event to `url` before `deadline` (``time.monotonic()``), the name resolution
        included; None on a 2xx answer, else what went wrong."""
        target = self._target(url, deadline)
        if isinstance(target, str):
            return target
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Batchcalls-Webhooks/1"}
        headers.update(signature_headers(secrets, event_id, body, int(time.time())))
        try:
            status = self.http.post(target[0], target[1], body, headers, timeout=deadline - time.monotonic())
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"

    def _target(self, url: str, deadline: float) -> tuple[CallbackTarget, tuple[str, ...]] | str:
        """Where to POST (the checked target and the addresses to connect to), or why not; the
        name resolved before `deadline` (``time.monotonic()``)."""
        resolve = resolver_until(self.resolve, deadline)
        try:
            target = check_callback_url(
                url,
                allow_http=self.settings.allow_http_callbacks,
                allowlist=self.settings.callback_allowlist,
                resolve=resolve,
            )
            return target, connect_addresses(target, resolve)
        except ResolveTimeout:
            return "callback host did not resolve within the webhook timeout"
        except InvalidRequest as exc:
            return f"callback URL refused: {exc.message}"
        except (OSError, UnicodeError) as exc:
            return f"callback URL refused: host does not resolve ({type(exc).__name__})"
