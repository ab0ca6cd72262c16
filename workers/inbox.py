"""The event inbox: provider events that apply now travel through Redis streams and are applied
many at a time by `drain_events` tasks, instead of one Celery task each.

A Celery task costs a worker more than applying an event (receiving, acknowledging and reporting
it to Flower). A drain reads its stream fifty entries per round trip, so under load, when the
drain task has waited in the queue behind other work, one task applies hundreds of events;
on an idle fleet a drain starts at once and applies the one event that woke it.

- Events are sharded by call id: one call's events stay in one stream, in order.
- A shard has at most one drain queued or running. `put` adds its entry and sets the shard's
  drain flag (SET NX) in one round trip, and sends a task only when it set the flag.
- A shard's drains read under one fixed consumer name. What a drain read and did not
  acknowledge (it died, or Postgres went away) is read first by the shard's next drain: Postgres
  applies each event exactly once, so reading one again is harmless.
- A drain stops after DRAIN_MAX_EVENTS events or DRAIN_MAX_SECONDS and sends its successor,
  so that other tasks get the pool process in between.
- `sweep` (the reconciler's) sends a drain for a shard that holds entries and has no drain: a
  flag whose task was lost expires after FLAG_SECONDS.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
import redis

from batchcalls.adapters import redis_keys
from batchcalls.adapters.logs import quoted
from batchcalls.domain.models import ProviderEvent

log = logging.getLogger("batchcalls.inbox")

GROUP = CONSUMER = "drain"
FLAG_SECONDS = 30
READ_COUNT = 50
DRAIN_MAX_EVENTS = 500
DRAIN_MAX_SECONDS = 1.0

# What a drain does with one entry's events (of one call).
Apply = Callable[[list[ProviderEvent]], object]
Entry = tuple[bytes, dict[bytes, bytes]]
# Errors after which the work is tried again later (by a task's retry), never dropped.
TRANSIENT = (psycopg2.OperationalError, psycopg2.InterfaceError, redis.ConnectionError, redis.TimeoutError)


def shard_of(call_id: str, shards: int) -> int:
    return zlib.crc32(call_id.encode()) % shards


@dataclass
class Drained:
    """What one drain task did (its task returns this, for Flower)."""

    events: int = 0
    dropped: int = 0
    more: bool = False  # it stopped at its budget and sent its successor


@dataclass
class Inbox:
    client: redis.Redis
    shards: int
    kick: Callable[[int], None]  # sends the `drain_events` task of a shard
    transient: tuple[type[BaseException], ...] = TRANSIENT

    def put(self, events: list[ProviderEvent]) -> None:
        """Queue events of one call (due now, in order) as one entry."""
        shard = shard_of(events[0].call_id, self.shards)
        token = uuid.uuid4().hex
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(redis_keys.event_stream(shard), {"e": json.dumps([e.to_message() for e in events])})
        pipe.set(redis_keys.event_drain_flag(shard), token, nx=True, ex=FLAG_SECONDS)
        pipe.get(redis_keys.event_drain_flag(shard))
        _, _, holder = pipe.execute()
        # The flag is ours when it holds our token: a pipeline the client sent again after a
        # lost reply finds the flag its first sending set, and must still send the drain.
        if holder is not None and holder.decode() == token:
            self._kick(shard)

    def _kick(self, shard: int) -> None:
        try:
            self.kick(shard)
        except BaseException:
            # No task will drain the shard: let the next `put` (or the sweep) send one.
            self.client.delete(redis_keys.event_drain_flag(shard))
            raise

    def drain(self, shard: int, apply: Apply, after_read: Callable[[], object] | None = None) -> Drained:
        """Apply the shard's events until its stream is empty or the budget is spent; after
        the entries of each read are applied (or some, and an error is raised), `after_read`."""
        key, done = redis_keys.event_stream(shard), Drained()
        started = time.monotonic()
        entries, pending = self._first_read(key)
        rechecked = False
        while True:
            if not entries and pending:  # what was pending is done: on to new entries
                entries, pending = self._read(key, ">"), False
            if not entries:
                if rechecked:  # what is left is being read by another drain (see `sweep`)
                    self.client.delete(redis_keys.event_drain_flag(shard))
                    return done
                if not self._still_ours_after_release(shard):
                    return done
                rechecked = True
                entries = self._read(key, ">")
                continue
            rechecked = False
            try:
                applied = self._apply(shard, entries, apply, done, started)
            finally:
                if after_read is not None:
                    after_read()
            ids = [entry_id for entry_id, _ in entries[:applied]]
            if applied < len(entries) or done.events >= DRAIN_MAX_EVENTS:
                self._ack(shard, ids)
                done.more = True  # the rest is pending: the successor reads it first
                self._kick(shard)
                return done
            entries, pending = self._ack(shard, ids, read_from="0" if pending else ">")

    def _first_read(self, key: str) -> tuple[list[Entry], bool]:
        """Make sure the consumer group exists (a new stream, or Redis lost its data), and read
        what this shard's drains read before and did not acknowledge, then new entries, in one
        round trip. Returns the entries in order, and whether more may be pending: when a full
        read of pending ones came back, the new ones just read are pending behind them."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xgroup_create(key, GROUP, id="0", mkstream=True)
        pipe.xreadgroup(GROUP, CONSUMER, {key: "0"}, count=READ_COUNT)
        pipe.xreadgroup(GROUP, CONSUMER, {key: ">"}, count=READ_COUNT)
        created, pending, new = pipe.execute(raise_on_error=False)
        if isinstance(created, Exception) and "BUSYGROUP" not in str(created):
            raise created
        for reply in (pending, new):
            if isinstance(reply, Exception):
                raise reply
        held = _entries(pending)
        if len(held) >= READ_COUNT:
            return held, True
        return held + _entries(new), False

    def _read(self, key: str, start: str) -> list[Entry]:
        return _entries(self.client.xreadgroup(GROUP, CONSUMER, {key: start}, count=READ_COUNT))

    def _still_ours_after_release(self, shard: int) -> bool:
        """Give the flag back, then look once more: an entry added after our last read, whose
        `put` found the flag still set, must not wait for the sweep. True when it is ours."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(redis_keys.event_drain_flag(shard))
        pipe.xlen(redis_keys.event_stream(shard))
        left = pipe.execute()[1]
        return bool(left) and self._take_flag(shard)

    def _take_flag(self, shard: int) -> bool:
        """Set the shard's drain flag if no drain holds it (`put` does this in its pipeline)."""
        return bool(self.client.set(redis_keys.event_drain_flag(shard), uuid.uuid4().hex, nx=True, ex=FLAG_SECONDS))

    def _apply(self, shard: int, entries: list[Entry], apply: Apply, done: Drained, started: float) -> int:
        """Apply entries in order; returns how many were dealt with (applied, or dropped as
        malformed or failing for good). A transient error is raised after acknowledging those."""
        for index, (entry_id, fields) in enumerate(entries):
            if index and (time.monotonic() - started > DRAIN_MAX_SECONDS or done.events >= DRAIN_MAX_EVENTS):
                return index
            try:
                events = _events(fields)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("dropping a malformed inbox entry id=%s error=%s", entry_id.decode(), quoted(exc))
                done.dropped += 1
                continue
            try:
                apply(events)
            except self.transient:
                self._ack(shard, [entry_id for entry_id, _ in entries[:index]])
                raise
            except Exception:
                # As a failing Celery task is: logged and not run again.
                log.exception("dropping inbox events that failed call_id=%s", events[0].call_id)
                done.dropped += 1
                continue
            done.events += len(events)
        return len(entries)

    def _ack(self, shard: int, ids: list[bytes], read_from: str | None = None) -> tuple[list[Entry], bool]:
        """Acknowledge and delete applied entries (the stream holds only what is still to do),
        and keep the flag while this drain goes on; with `read_from` ("0": pending entries,
        ">": new ones), read the next entries in the same round trip. Returns them, and
        whether more may be pending."""
        pipe = self.client.pipeline(transaction=False)
        if ids:
            pipe.xack(redis_keys.event_stream(shard), GROUP, *ids)
            pipe.xdel(redis_keys.event_stream(shard), *ids)
        pipe.expire(redis_keys.event_drain_flag(shard), FLAG_SECONDS)
        if read_from is not None:
            pipe.xreadgroup(GROUP, CONSUMER, {redis_keys.event_stream(shard): read_from}, count=READ_COUNT)
        replies = pipe.execute()
        if read_from is None:
            return [], False
        entries = _entries(replies[-1])
        return entries, read_from == "0" and len(entries) >= READ_COUNT

    def sweep(self) -> int:
        """Send a drain for each shard that holds entries and has no drain; returns how many."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.xlen(redis_keys.event_stream(shard))
        kicked = 0
        for shard, length in enumerate(pipe.execute()):
            if length and self._take_flag(shard):
                log.warning(
                    "sending a drain for provider events nobody was applying shard=%d entries=%d", shard, length
                )
                self._kick(shard)
                kicked += 1
        return kicked


def _entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply for one stream: [(id, fields)] (fields empty for an entry deleted
    while pending: it is dropped as malformed, and acknowledged)."""
    if not reply:
        return []
    _, entries = reply[0]
    return [(entry_id, fields or {}) for entry_id, fields in entries]


def _events(fields: dict[bytes, bytes]) -> list[ProviderEvent]:
    events = [ProviderEvent.from_message(message) for message in json.loads(fields[b"e"])]
    if not events or len({e.call_id for e in events}) != 1:
        raise ValueError("an entry holds the events of one call")
    return events
