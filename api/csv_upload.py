"""`POST /v1/batches` with a CSV: `Content-Type: text/csv` (the batch's options as query
parameters) or `multipart/form-data` (a `file` part with the CSV and an `options` part with a JSON
object of the batch's options).

Streamed: the body is spooled to a temporary file as it arrives (hashed on the way, for the
Idempotency-Key), then read row by row; calls are checked and stored `CHUNK_ROWS` at a time in
the submit's one transaction, so memory does not grow with the CSV (but for the numbers seen, kept
to find repeats across groups: `CsvList`). Any problem rolls the whole batch back: its answer names
the CSV line and column of each (at most `MAX_PROBLEMS`).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import multiprocessing as mp
import re
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import IO, Any

from flask import g, request

from api.csv_body import read_body
from api.schemas import load_batch_request
from batchcalls.adapters.delivery.targets import check_callback_url
from batchcalls.domain import errors
from batchcalls.domain.call_lists import nothing_to_call
from batchcalls.domain.csv_calls import CsvHeaderError, CsvLayout, CsvList
from batchcalls.domain.destinations import DestinationPolicy
from batchcalls.domain.errors import BatchcallsError, DuplicatePhoneNumber, InvalidRequest
from batchcalls.domain.models import NewBatch
from batchcalls.domain.policy import Policy
from batchcalls.domain.validation import build_batch_part, warm_up
from batchcalls.domain.voices import voice_catalog
from batchcalls.domain.window_spec import to_json
from batchcalls.engine import Engine

CSV_TYPES = frozenset({"text/csv", "multipart/form-data"})
CHUNK_ROWS = 5000
AHEAD = 2  # groups checked ahead of the one being stored
POOL_BYTES = 4 * 1024 * 1024  # a CSV larger than this is checked in a second process
MAX_PROBLEMS = 100
ROW_DEFAULTS = frozenset({"text"})  # the text of rows whose text cell is empty
_CALL_PATH = re.compile(r"calls\[(\d+)\]\.?(.*)")


def is_csv() -> bool:
    return request.mimetype in CSV_TYPES


_Refused = tuple[str, str, Any]  # an error's class name, message and details (an exception may not pickle)


def _build_part(
    options: dict[str, Any], calls: list[dict[str, Any]], max_concurrency: int, destinations: DestinationPolicy
) -> NewBatch | _Refused:
    """A group of calls checked as a JSON body's are (in a pool's process, or here)."""
    try:
        return build_batch_part(
            load_batch_request({**options, "calls": calls}),
            max_concurrency=max_concurrency,
            voices=voice_catalog(),
            destinations=destinations,
            now=datetime.now(UTC),
        )
    except InvalidRequest as exc:
        return type(exc).__name__, exc.message, exc.details


def _unreadable(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "is not UTF-8 text"
    return f"cannot be read: {exc}"


def _named(exc: BatchcallsError, lines: list[int], layout: CsvLayout) -> dict[str, list[str]]:
    """The details of an error about `calls[i]...` of a chunk, named by CSV line and column."""
    named: dict[str, list[str]] = {}
    for path, messages in (exc.details or {}).items() if isinstance(exc.details, Mapping) else []:
        found = _CALL_PATH.fullmatch(path)
        if found is None:
            named[path] = list(messages)
            continue
        line = lines[int(found.group(1))]
        named[f"line {line}, column {layout.column_of(found.group(2))}"] = list(messages)
    return named


class _Reading:
    """The calls of a CSV as NewBatch parts of at most CHUNK_ROWS calls, with the problems found."""

    def __init__(self, text: IO[str], options: dict[str, Any], engine: Engine, policy: Policy) -> None:
        self.reader = csv.reader(text)
        try:
            header = next(self.reader)
        except StopIteration:
            raise InvalidRequest("the CSV is empty", {"line 1": ["a header is required"]}) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"the CSV cannot be read: {exc}", {"line 1": [_unreadable(exc)]}) from None
        try:
            self.layout = CsvLayout.of(header)
        except CsvHeaderError as exc:
            raise InvalidRequest(f"the CSV's header: {exc}", exc.problems) from None
        self.default_text = options.pop("text", None)
        self.options, self.engine, self.policy = options, engine, policy
        self.problems: dict[str, list[str]] = {}
        self.error: type[BatchcallsError] = InvalidRequest
        self.rows = 0
        self.pool: ProcessPoolExecutor | None = None
        self.list = CsvList(dedupe=options.get("dedupe", True) is not False, keep_skips=MAX_PROBLEMS)

    def _submit(self, calls: list[dict[str, Any]]) -> Future[NewBatch | _Refused]:
        args = (self.options, calls, self.engine.settings.max_concurrency, self.policy.destinations)
        if self.pool is not None:
            return self.pool.submit(_build_part, *args)
        done: Future[NewBatch | _Refused] = Future()
        done.set_result(_build_part(*args))
        return done

    def _part(self, built: NewBatch | _Refused, lines: list[int]) -> NewBatch | None:
        if isinstance(built, NewBatch):
            return built
        error = getattr(errors, built[0], InvalidRequest)
        if not self.problems:
            self.error = error
        self.problems.update(_named(error(built[1], built[2]), lines, self.layout))
        return None

    def parts(self) -> Iterator[NewBatch]:
        """The checked parts, in order. With a pool, a group is checked there while the ones
        before are stored (at most `AHEAD` groups ahead)."""
        calls: list[dict[str, Any]] = []
        lines: list[int] = []
        pending: deque[tuple[Future[NewBatch | _Refused], list[int]]] = deque()
        try:
            for cells in self.reader:
                line = self.reader.line_num
                if not "".join(cells).strip():
                    continue  # a blank line
                self.rows += 1
                if self.rows > self.policy.max_calls_per_batch:
                    message = f"holds more than {self.policy.max_calls_per_batch} calls (max_calls_per_batch)"
                    raise InvalidRequest(f"the CSV {message}", {"calls": [message]})
                call = self.layout.call(cells, self.default_text)
                if isinstance(call, str):
                    self.problems[f"line {line}"] = [call]
                else:
                    calls.append(call)
                    lines.append(line)
                if len(calls) >= CHUNK_ROWS:
                    pending.append((self._submit(calls), lines))
                    calls, lines = [], []
                while len(pending) > AHEAD or (pending and pending[0][0].done()):
                    yield from self._checked(*pending.popleft())
                if len(self.problems) >= MAX_PROBLEMS:
                    break
        except (csv.Error, UnicodeDecodeError) as exc:
            self.problems[f"line {self.reader.line_num + 1}"] = [_unreadable(exc)]
        if calls:
            pending.append((self._submit(calls), lines))
        while pending:
            yield from self._checked(*pending.popleft())
        self._raise_problems()

    def _checked(self, future: Future[NewBatch | _Refused], lines: list[int]) -> Iterator[NewBatch]:
        part = self._part(future.result(), lines)
        if part is not None:
            part, repeats = self.list.take(part, lines)
            if repeats and not self.problems:
                self.error = DuplicatePhoneNumber
            for where, messages in repeats.items():
                if len(self.problems) < MAX_PROBLEMS:
                    self.problems[where] = messages
        if part is not None and not self.problems:
            if part.calling_window is None and self.policy.calling_window is not None:
                part = replace(part, calling_window=self.policy.calling_window)
            yield part

    def _raise_problems(self) -> None:
        if not self.problems and not self.rows:
            raise InvalidRequest("the CSV has no calls", {"line 2": ["a call is required"]})
        if not self.problems and not self.list.kept:  # every call skipped (`invalid_numbers: skip`)
            raise nothing_to_call(self.list.skips)
        if self.problems:
            first, messages = next(iter(self.problems.items()))
            more = f" (and {len(self.problems) - 1} more; see details)" if len(self.problems) > 1 else ""
            raise self.error(f"CSV {first}: {messages[0]}{more}", self.problems)


def _checker_ready() -> None:
    """A pool process's start: its number rules compiled, and no cyclic garbage collection (see
    `_no_cycle_collection`; the process ends with the upload)."""
    warm_up()
    gc.disable()


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """No cyclic garbage collection while the CSV streams through: each group makes hundreds of
    thousands of short-lived objects (rows, calls, the pool's answers), none of them in a cycle,
    and the collector's passes over the whole process took a fifth of a large upload's time.
    Reference counting still frees every group as it is stored."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def submit_csv(engine: Engine, policy: Policy, key: str | None) -> tuple[str, bool]:
    """Store the CSV's batch (see the module's docstring); (batch id, created)."""
    spool, options, digest = read_body(engine.settings.max_csv_bytes)
    with spool:
        if key is not None and (replayed := engine.replay_digest(g.tenant, key, digest)) is not None:
            return replayed, False
        if "calling_window" not in options and policy.calling_window is not None:
            options["calling_window"] = to_json(policy.calling_window)
        large = spool.seek(0, io.SEEK_END) > POOL_BYTES
        spool.seek(0)
        text = io.TextIOWrapper(spool, encoding="utf-8-sig", newline="")
        reading = _Reading(text, options, engine, policy)
        with contextlib.ExitStack() as stack:
            if large:  # checking a group costs more than storing it: a second core checks
                reading.pool = stack.enter_context(
                    ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_checker_ready)
                )
            stack.enter_context(_no_cycle_collection())
            return _store(engine, reading, key, digest)


def _store(engine: Engine, reading: _Reading, key: str | None, digest: str) -> tuple[str, bool]:
    parts = reading.parts()
    first = next(parts, None)  # the batch's options, checked with its first calls
    if first is None:
        reading._raise_problems()
    assert first is not None
    if first.callback_url is not None:
        check_callback_url(
            first.callback_url,
            allow_http=engine.settings.allow_http_callbacks,
            allowlist=engine.settings.callback_allowlist,
        )
    rest = _then(first, parts)
    return engine.submit(g.tenant, replace(first, calls=()), key, None, chunks=rest, digest=digest)


def _then(first: NewBatch, rest: Iterator[NewBatch]) -> Iterator[NewBatch]:
    yield first
    yield from rest
