"""The request of a CSV upload: the CSV spooled to a temporary file as it arrives (hashed on the
way, for the Idempotency-Key), and the batch's options from the query string (`text/csv`) or
from a JSON `options` part (`multipart/form-data`)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from typing import IO, Any

from flask import request

from batchcalls.domain.errors import InvalidRequest, PayloadTooLarge

SPOOL_BYTES = 8 * 1024 * 1024  # kept in memory up to this, then on disk
_BLOCK = 1024 * 1024
JSON_OPTIONS = frozenset({"retry_config", "metadata", "calling_window", "voicemail"})
INT_OPTIONS = frozenset({"concurrency", "priority"})
BOOL_OPTIONS = {"true": True, "false": False}  # `dedupe`


def query_options() -> dict[str, Any]:
    options: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    for name, raw in request.args.items():
        try:
            if name in JSON_OPTIONS:
                options[name] = json.loads(raw)
            elif name in INT_OPTIONS:
                options[name] = int(raw)
            elif name == "dedupe":
                options[name] = BOOL_OPTIONS.get(raw, raw)  # a string: a 422 by the schema
            else:
                options[name] = raw
        except ValueError:
            problems[name] = ["must be JSON" if name in JSON_OPTIONS else "must be a whole number"]
    if problems:
        raise InvalidRequest(f"invalid query parameter: {next(iter(problems))}", problems)
    return options


def spooled(source: IO[bytes], limit: int) -> tuple[IO[bytes], hashlib._Hash]:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by the caller
    digest, size = hashlib.sha256(), 0
    while block := source.read(_BLOCK):
        size += len(block)
        if size > limit:
            spool.close()
            raise PayloadTooLarge(f"the CSV is larger than {limit} bytes (BATCHCALLS_MAX_CSV_BYTES)")
        digest.update(block)
        spool.write(block)
    spool.seek(0)
    return spool, digest


def read_body(limit: int) -> tuple[IO[bytes], dict[str, Any], str]:
    """The CSV (spooled), the batch's options, and the request's digest."""
    request.max_content_length = limit + 1024 * 1024  # the CSV and its form around it
    if request.mimetype == "text/csv":
        options = query_options()
        spool, digest = spooled(request.stream, limit)
    else:
        part = request.files.get("file")
        if part is None:
            raise InvalidRequest("a multipart upload needs a `file` part holding the CSV", {"file": ["is required"]})
        raw_options = request.form.get("options") or "{}"
        try:
            options = json.loads(raw_options)
        except ValueError as exc:
            raise InvalidRequest("the `options` part must be a JSON object", {"options": ["must be JSON"]}) from exc
        if not isinstance(options, dict):
            raise InvalidRequest("the `options` part must be a JSON object", {"options": ["must be an object"]})
        spool, digest = spooled(part.stream, limit)
    digest.update(b"\x00options\x00" + json.dumps(options, sort_keys=True).encode())
    return spool, options, digest.hexdigest()
