"""One log format for every process: logfmt lines (`key=value`, UTC timestamps).

A caller writes its message as a few words saying what happened followed by `key=value` pairs,
with the ids of the batch and call it is about as `batch_id=... call_id=...`:

    log.info("rebuilt Redis state batch_id=%s ready=%d", batch_id, ready)

The formatter turns the leading words into `msg="..."`, so every line is `key=value` pairs only:

    ts=2026-01-01T00:00:00.000Z level=info logger=batchcalls.engine pid=7 msg="rebuilt Redis state" batch_id=batch_1 ready=3

A value that may hold spaces, quotes or `=` (an error message, a URL) goes through `quoted()`,
and a URL through `redact_url()` first: a callback URL's query string or user info may hold
the receiver's token. As a safety net the formatter also redacts every `scheme://` URL it finds
in a line, and every API key and webhook secret of ours (known by their prefixes). Lines of other libraries (Celery's own) become `msg="..."` whole.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from urllib.parse import urlsplit

_KEY = r"[A-Za-z_][A-Za-z0-9_.:-]*"
_VALUE = r'(?:"(?:[^"\\\n]|\\.)*"|[^\s"=]*)'
# The longest run of `key=value` pairs that ends the message, after its leading words.
_PAIRS = re.compile(rf"(?:^|(?<= )){_KEY}={_VALUE}(?: {_KEY}={_VALUE})*$")
_NEEDS_QUOTES = re.compile(r'[\s"=\\]|[^\x20-\x7e]')
_LONGEST_SPLIT = 4000  # a longer message (a dump of some sort) is one msg, not searched for pairs
# A URL as it shows in a line, bare or inside a quoted value (which ends at a quote or an escape).
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"\\<>]+")
# Libraries whose DEBUG lines carry what a request holds: urllib3 writes each request's path
# with its query string (a callback's token), the Vonage SDK each request's body (phone
# numbers, scripts) and headers (the application's JWT). They log at INFO at most.
_QUIETED = ("urllib3", "vonage_http_client", "vonage")
REDACTED = "[redacted]"
# Our own credentials, recognised by their prefixes wherever a line carries one (a library's
# line may: Flask-Limiter's names the key a client went over its limit with). The prefixes are
# KEY_PREFIX of batchcalls.adapters.store.tenants and SECRET_PREFIX of batchcalls.domain.signing.
_CREDENTIAL = re.compile(r"\b(bc_live_|whsec_)[A-Za-z0-9_+/=-]+")


def redact_url(url: str) -> str:
    """`url` without its user info, query and fragment (where credentials and tokens ride), for
    a log line: `https://u:p@crm.example/hooks?token=x` -> `https://crm.example/hooks`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme or parts.netloc else parts.path


def redact_in(text: str, url: str) -> str:
    """`text` (an error message about a request to `url`) with the URL's user info, query and
    fragment replaced by REDACTED wherever they show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    userinfo = parts.netloc.rpartition("@")[0]
    for secret in sorted((s for s in (parts.query, parts.fragment, userinfo) if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def quoted(value: object) -> str:
    """`value` as a logfmt value: bare when it can be, else double-quoted with JSON escapes."""
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def split_message(message: str) -> tuple[str, str]:
    """(the leading words, the `key=value` pairs that end `message`), either possibly empty."""
    if len(message) <= _LONGEST_SPLIT and "\n" not in message:
        found = _PAIRS.search(message)
        if found:
            return message[: found.start()].rstrip(" "), found.group(0)
    return message.strip(" "), ""


class LineFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
        text, pairs = split_message(record.getMessage())
        line = f"ts={stamp} level={record.levelname.lower()} logger={quoted(record.name)} pid={record.process}"
        if text:
            line += f" msg={quoted(text)}"
        if pairs:
            line += f" {pairs}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if "://" in line:
            line = _URL.sub(lambda found: redact_url(found.group(0)), line)
        if "bc_live_" in line or "whsec_" in line:
            line = _CREDENTIAL.sub(rf"\1{REDACTED}", line)
        return line


def configure(level: str | None = None) -> None:
    """Send every logger's lines to stderr in the one format (`BATCHCALLS_LOG_LEVEL`, default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("BATCHCALLS_LOG_LEVEL", "INFO"))
    for name in _QUIETED:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
