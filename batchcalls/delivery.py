"""The outbox relay: POST each batch's events to its callback URL, signed, in order, at least
once, retrying with exponential backoff for longer than a day.

One relay runs per batch at a time (a Redis lock); a kick that finds the lock taken leaves a
flag that the running relay checks after it lets go, so no event waits for the next sweep.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import redis
import requests

from batchcalls.callbacks import check_callback_url
from batchcalls.errors import InvalidRequest
from batchcalls.events import backoff_seconds
from batchcalls.metrics import Metrics
from batchcalls.signing import signature_headers
from batchcalls.store import batches, outbox
from batchcalls.store.db import Database
from batchcalls.store.tenants import webhook_secrets_for_batch
from config.settings import Settings

log = logging.getLogger("batchcalls.delivery")

# The relay's lock outlives one POST (the webhook timeout) by this much and is renewed before
# each POST, so a relay killed mid-delivery holds up its batch's events for seconds, not minutes.
LOCK_MARGIN_SECONDS = 5


@dataclass(frozen=True)
class Outcome:
    delivered: int
    retry_in: float | None  # seconds until the first event that failed is due again


class Relay:
    def __init__(self, settings: Settings, db: Database, client: redis.Redis,
                 session: requests.Session | None = None, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.settings = settings
        self.db = db
        self.redis = client
        self.session = session or requests.Session()

    def run(self, batch_id: str) -> Outcome:
        """Deliver what is due for one batch; safe to call any number of times at once."""
        lock_key, dirty_key = f"bc:{{{batch_id}}}:relay", f"bc:{{{batch_id}}}:relay-dirty"
        lock_ms = int((self.settings.webhook_timeout_seconds + LOCK_MARGIN_SECONDS) * 1000)
        self.redis.set(dirty_key, "1", px=lock_ms * 4)
        total, retry_in = 0, None
        while True:
            token = uuid.uuid4().hex
            if not self.redis.set(lock_key, token, nx=True, px=lock_ms):
                return Outcome(total, None)
            still_ours = partial(self._renew_lock, lock_key, token, lock_ms)
            try:
                self.redis.delete(dirty_key)
                delivered, retry_in = self._deliver_due(batch_id, still_ours)
                total += delivered
            finally:
                if self.redis.get(lock_key) in (token, token.encode()):
                    self.redis.delete(lock_key)
            if not self.redis.exists(dirty_key):
                return Outcome(total, retry_in)

    def _renew_lock(self, lock_key: str, token: str, lock_ms: int) -> bool:
        """Renew the lock for one more POST; False when it expired and passed to another relay."""
        if self.redis.get(lock_key) not in (token, token.encode()):
            return False
        self.redis.pexpire(lock_key, lock_ms)
        return True

    def _deliver_due(self, batch_id: str, still_ours: Callable[[], bool]) -> tuple[int, float | None]:
        delivered = 0
        with self.db.transaction() as cur:
            batch = batches.get_batch(cur, batch_id)
            secrets = webhook_secrets_for_batch(cur, batch_id)
        if batch is None or not batch["callback_url"]:
            return 0, None
        url = batch["callback_url"]
        while True:
            with self.db.transaction() as cur:
                pending = outbox.pending_events(cur, batch_id)
            if not pending:
                return delivered, None
            for event in pending:
                wait = (event["next_attempt_at"] - datetime.now(UTC)).total_seconds()
                if wait > 0:
                    return delivered, wait  # in order: later events wait behind this one
                if not still_ours():
                    return delivered, None
                error = self._post(url, secrets, event["id"], event["payload"])
                if self.metrics is not None:
                    self.metrics.webhook(error is None)
                with self.db.transaction() as cur:
                    if error is None:
                        outbox.mark_delivered(cur, event["seq"])
                        delivered += 1
                        continue
                    age_hours = (datetime.now(UTC) - event["created_at"]).total_seconds() / 3600
                    give_up = age_hours > self.settings.webhook_retry_hours
                    retry_in = backoff_seconds(event["delivery_attempts"] + 1)
                    outbox.mark_failed(cur, event["seq"], error, retry_in, give_up)
                log.warning("event %s to %s failed (%s)%s", event["id"], url, error,
                            "; giving up" if give_up else f"; retry in {retry_in:.1f}s")
                if not give_up:
                    return delivered, retry_in

    def _post(self, url: str, secrets: tuple[str, ...], event_id: str, payload: dict[str, Any]) -> str | None:
        """POST one event; None on a 2xx answer, else what went wrong."""
        try:
            check_callback_url(url, allow_http=self.settings.allow_http_callbacks,
                               allowlist=self.settings.callback_allowlist)
        except InvalidRequest as exc:
            return f"callback URL refused: {exc.message}"
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Batchcalls-Webhooks/1"}
        headers.update(signature_headers(secrets, event_id, body, int(time.time())))
        try:
            response = self.session.post(url, data=body, headers=headers, allow_redirects=False,
                                         timeout=self.settings.webhook_timeout_seconds)
        except requests.RequestException as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
