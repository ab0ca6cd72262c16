"""Log lines are logfmt (`key=value` pairs only) and name the batch and call they are about as
`batch_id=... call_id=...`: through the formatter, for a line the engine writes, for a line a
real code path writes, and for every log call in the code (read from its source)."""

from __future__ import annotations

import ast
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from batchcalls.adapters import logs
from batchcalls.adapters.logs import LineFormatter, quoted, redact_in, redact_url
from batchcalls.adapters.store.tenants import KEY_PREFIX
from batchcalls.domain.signing import SECRET_PREFIX
from batchcalls.engine import reconciler

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def parse_logfmt(line: str) -> dict[str, str]:
    """Strict logfmt: `key=value` pairs separated by one space; a key is a run of characters
    other than space, `=` and `"`; a value is such a run (possibly empty) or a double-quoted
    string with backslash escapes. A bare word (a key without `=`) is an error."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(line):
        key = re.match(r'[^ ="]+', line[i:])
        if not key or line[i + key.end() : i + key.end() + 1] != "=":
            raise ValueError(f"not a key=value pair at {i}: {line[i : i + 40]!r} in {line!r}")
        name = key.group(0)
        i += key.end() + 1
        if line[i : i + 1] == '"':
            end = i + 1
            while end < len(line) and line[end] != '"':
                end += 2 if line[end] == "\\" else 1
            if end >= len(line):
                raise ValueError(f"unclosed quote in {line!r}")
            value = json.loads(line[i : end + 1])
            i = end + 1
        else:
            bare = re.match(r'[^ ="]*', line[i:])
            assert bare is not None
            value = bare.group(0)
            i += bare.end()
        if name in fields:
            raise ValueError(f"{name} twice in {line!r}")
        fields[name] = value
        if i < len(line):
            if line[i] != " " or i + 1 == len(line):
                raise ValueError(f"pairs must be separated by one space at {i} in {line!r}")
            i += 1
    return fields


def formatted(message: str, *args: object, name: str = "batchcalls.engine", level: int = logging.INFO) -> str:
    record = logging.LogRecord(name, level, __file__, 1, message, args, None)
    return LineFormatter().format(record)


def test_the_parser_refuses_what_is_not_logfmt() -> None:
    assert parse_logfmt('a=1 b="two words" c=') == {"a": "1", "b": "two words", "c": ""}
    for bad in ("rebuilt Redis state of batch_1", "a=1  b=2", 'a="open', "a=1 b", "a=1 a=2", "a=x=y"):
        with pytest.raises(ValueError):
            parse_logfmt(bad)


def test_an_engine_line_is_logfmt_with_its_batch_and_call_ids() -> None:
    line = formatted("dialing call_id=%s batch_id=%s attempt=%d", "call_7", "batch_3", 2)
    fields = parse_logfmt(line)
    assert fields["msg"] == "dialing"
    assert (fields["batch_id"], fields["call_id"], fields["attempt"]) == ("batch_3", "call_7", "2")
    assert fields["level"] == "info" and fields["logger"] == "batchcalls.engine"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["ts"])
    assert fields["pid"].isdigit()


def test_the_rebuilt_line_carries_the_batch_id_as_a_field() -> None:
    fields = parse_logfmt(formatted("rebuilt Redis state batch_id=%s ready=%d delayed=%d live=%d", "batch_9", 3, 1, 2))
    assert fields["msg"] == "rebuilt Redis state"
    assert (fields["batch_id"], fields["ready"], fields["delayed"], fields["live"]) == ("batch_9", "3", "1", "2")


def test_values_with_spaces_quotes_and_equals_signs_are_quoted() -> None:
    error = 'HTTP 500 "oops" at https://crm.example/hook\nsecond line a=1'
    fields = parse_logfmt(
        formatted(
            "event delivery failed batch_id=%s url=%s error=%s retry_in=%.1f",
            "batch_1",
            quoted("https://crm.example/hook"),
            quoted(error),
            2.0,
        )
    )
    assert fields["url"] == "https://crm.example/hook"
    assert fields["error"] == error and fields["retry_in"] == "2.0" and fields["batch_id"] == "batch_1"
    assert quoted("batch_1") == "batch_1" and quoted("") == '""'


@pytest.mark.parametrize(
    "message",
    [
        "Task batchcalls.dispatch[5d1c] succeeded in 0.003s: None",  # Celery's own lines
        'an "unquoted" value: error=connection refused',  # a caller that forgot quoted()
        "multi\nline message with a=1",
        "",
    ],
)
def test_any_other_line_is_still_logfmt_with_the_text_as_msg(message: str) -> None:
    fields = parse_logfmt(formatted(message, name="celery.app.trace"))
    assert fields.get("msg", "") == message


def test_a_real_code_path_writes_batch_id_and_call_id(caplog: pytest.LogCaptureFixture) -> None:
    """The reconciler giving up on an attempt whose provider went silent."""
    recorded: list[Any] = []
    engine = SimpleNamespace(
        provider=None, settings=SimpleNamespace(stale_attempt_seconds=1), record_event=recorded.append
    )
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    attempt = {
        "call_id": "call_42",
        "number": 2,
        "phone_number": "+442079460010",
        "status": "dialing",
        "provider_call_id": None,
        "dialed_at": long_ago,
        "last_event_at": long_ago,
        "batch_id": "batch_17",
    }
    with caplog.at_level(logging.INFO, logger="batchcalls.reconciler"):
        assert reconciler._resolve_stale(engine, attempt) == 1  # type: ignore[arg-type]
    assert len(recorded) == 1
    [record] = [r for r in caplog.records if r.name == "batchcalls.reconciler"]
    fields = parse_logfmt(LineFormatter().format(record))
    assert (fields["batch_id"], fields["call_id"], fields["attempt"]) == ("batch_17", "call_42", "2")
    assert fields["reason"] == "the provider never confirmed this call"
    assert fields["level"] == "warning" and fields["msg"] == "ending a silent attempt as failed"


# -- URLs: no credentials, tokens or fragments in a line -----------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://crm.example/hooks?token=s3cr3t", "https://crm.example/hooks"),
        ("https://user:pa55@crm.example:8443/hooks/x?a=1&token=s3cr3t#frag", "https://crm.example:8443/hooks/x"),
        ("https://crm.example", "https://crm.example"),
        ("https://crm.example?token=s3cr3t", "https://crm.example"),
        ("http://[::1]:8080/h#token=s3cr3t", "http://[::1]:8080/h"),
        ("https://:pa55@crm.example/", "https://crm.example/"),
        ("redis://:pa55@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("crm.example/hooks?token=s3cr3t", "crm.example/hooks"),
        ("http://[::1/h?token=s3cr3t", "<invalid URL>"),
    ],
)
def test_a_logged_url_loses_its_user_info_query_and_fragment(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_an_error_about_a_url_loses_the_urls_secrets_wherever_they_show() -> None:
    url = "https://bob:pa55@crm.example/hooks?token=s3cr3t&x=1#f-r-a-g"
    error = "MaxRetryError: Max retries exceeded with url: /hooks?token=s3cr3t&x=1 (bob:pa55) f-r-a-g"
    assert (
        redact_in(error, url)
        == "MaxRetryError: Max retries exceeded with url: /hooks?[redacted] ([redacted]) [redacted]"
    )
    assert redact_in("HTTP 500", url) == "HTTP 500"
    assert redact_in("HTTP 500", "http://[::1") == "HTTP 500"


def test_the_formatter_redacts_any_url_a_line_carries() -> None:
    """A safety net for lines that did not call `redact_url` (another library's, a forgotten one)."""
    line = formatted(
        "event delivery failed url=%s error=%s",
        quoted("https://u:p@crm.example/h?token=s3cr3t"),
        quoted("refused by https://crm.example/h?token=s3cr3t#x (twice)"),
    )
    assert "s3cr3t" not in line and "u:p" not in line
    fields = parse_logfmt(line)
    assert fields["url"] == "https://crm.example/h"
    assert fields["error"] == "refused by https://crm.example/h (twice)"
    line = formatted("Connected to redis://:**@127.0.0.1:6379/0", name="celery.worker.consumer.connection")
    assert parse_logfmt(line)["msg"] == "Connected to redis://127.0.0.1:6379/0"


def test_the_formatter_redacts_our_api_keys_and_webhook_secrets() -> None:
    key, secret = KEY_PREFIX + "AbC_d-e" * 5, SECRET_PREFIX + "q+/W=" * 8
    line = formatted("ratelimit 1200 per 1 minute (%s) exceeded at endpoint: %s", key, "batches", name="flask-limiter")
    assert parse_logfmt(line)["msg"] == "ratelimit 1200 per 1 minute (bc_live_[redacted]) exceeded at endpoint: batches"
    line = formatted("oops secret=%s", quoted(f"{secret} and {secret}"))
    assert parse_logfmt(line)["secret"] == "whsec_[redacted] and whsec_[redacted]"


def test_libraries_that_log_request_contents_stay_above_debug() -> None:
    """urllib3 logs each request's path and query at DEBUG; the Vonage SDK its body and headers."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in ("urllib3", "vonage_http_client")}
    try:
        logs.configure("DEBUG")
        assert root.isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("vonage_http_client.http_client").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], level, levels = saved
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)


# -- every log call in the code ---------------------------------------------------------------

PLACEHOLDER = re.compile(r"%(?:\.\d+)?[sdrf]")


def _log_calls() -> list[tuple[str, ast.Call]]:
    found = []
    for folder in ("batchcalls", "workers", "api", "config"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("log", "logger")
                ):
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return found


LOG_CALLS = _log_calls()


def _about(arg: ast.expr) -> str | None:
    """Which id an argument is: `batch_id` or `call_id` (by its source), else None."""
    source = ast.unparse(arg)
    if re.search(r"\bbatch_id\b", source):
        return "batch_id"
    if re.search(r"""\bcall_id\b|\bcall\[["']id["']\]""", source):  # not provider_call_id
        return "call_id"
    return None


def test_the_code_has_log_calls_to_check() -> None:
    assert len(LOG_CALLS) > 20
    assert any("rebuilt Redis state" in ast.unparse(call.args[0]) for _, call in LOG_CALLS)


@pytest.mark.parametrize("where,call", LOG_CALLS, ids=[where for where, _ in LOG_CALLS])
def test_every_log_call_writes_logfmt_naming_its_batch_and_call(where: str, call: ast.Call) -> None:
    assert call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str), (
        f"{where}: the message is not a literal format string"
    )
    message: str = call.args[0].value
    args = call.args[1:]
    specs = PLACEHOLDER.findall(message)
    assert len(specs) == len(args), f"{where}: {len(specs)} placeholders for {len(args)} arguments"
    samples: list[object] = []
    expected: dict[str, str] = {}
    for i, (spec, arg) in enumerate(zip(specs, args, strict=True)):
        if spec.endswith("d"):
            samples.append(7001 + i)
        elif spec.endswith("f"):
            samples.append(7001.5 + i)
        else:
            samples.append(f"sample{i}")
        about = _about(arg)
        if about:
            expected[about] = f"sample{i}"
    fields = parse_logfmt(formatted(message, *samples))
    assert "msg" in fields, f"{where}: no words saying what happened"
    assert fields["msg"] == fields["msg"].strip() and "=" not in fields["msg"], (
        f"{where}: key=value pairs not at the end of the message: {message!r}"
    )
    for spec, sample in zip(specs, samples, strict=True):
        shown = spec % sample
        assert shown not in fields["msg"] and shown in fields.values(), (
            f"{where}: {spec} is not the value of a key=value pair in {message!r}"
        )
    for key, value in expected.items():
        assert fields.get(key) == value, f"{where}: {message!r} does not write {key}=<the id>"
