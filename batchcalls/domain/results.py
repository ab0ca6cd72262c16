"""The results export of a batch (`GET /v1/batches/<id>/results`): its formats, its CSV columns,
and the cells a spreadsheet must not run. Pure: the store gives rows, this shapes them.

One row per call. JSONL lines are built by the store (Postgres writes each line's JSON); CSV lines
are built here (`csv_lines`), from the store's text columns: JSON columns arrive as JSON text,
never parsed, except a call's `responses` when the export has `response.<name>` columns and the
call has any.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from batchcalls.domain.errors import InvalidRequest

JSONL = "jsonl"
CSV = "csv"
FORMATS = (JSONL, CSV)
DEFAULT_FORMAT = JSONL
MEDIA_TYPES = {JSONL: "application/x-ndjson", CSV: "text/csv"}
_ACCEPTED = {"application/x-ndjson": JSONL, "application/jsonl": JSONL, "text/csv": CSV}

# The columns of one call, in the store's order; CSV adds one `response.<name>` column per named
# input step of the batch's first call (`answer_columns`).
COLUMNS = (
    "id",
    "phone_number",
    "status",
    "outcome",
    "attempts",
    "last_error",
    "first_dialed_at",
    "answered_at",
    "ended_at",
    "talk_time",
    "voicemail_left",
    "metadata",
    "variables",
    "responses",
)
RESPONSE_PREFIX = "response."

# A cell a spreadsheet reads as a formula (OWASP "CSV injection"): one starting with = + - @, a
# tab or a carriage return. Such a cell is written with a leading apostrophe, which spreadsheets
# show as text, unless it is a plain number (+442071234567, -3.5), which a spreadsheet can only
# read as that number: phone numbers stay as they are.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_FIRST_CHARS = frozenset("".join(_FORMULA_START))


def choose_format(query: str | None, accept: Iterable[str]) -> str:
    """The export's format: `?format=` when given, else the first of `accept` (media types in the
    client's order of preference) that names one, else JSONL."""
    if query is not None:
        if query not in FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", {"format": ["unknown format"]})
        return query
    for media_type in accept:
        if media_type in _ACCEPTED:
            return _ACCEPTED[media_type]
    return DEFAULT_FORMAT


def safe_cell(value: str) -> str:
    """`value` as a CSV cell a spreadsheet will not evaluate (see `_FORMULA_START`)."""
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def answer_columns(script: Mapping[str, Any] | None) -> list[str]:
    """The names of the named input steps of `script` (the batch's first call's), in step
    order, each once: the CSV's `response.<name>` columns."""
    names: list[str] = []
    for step in (script or {}).get("steps") or []:
        name = step.get("name") if isinstance(step, Mapping) else None
        if step.get("type") == "input" and isinstance(name, str) and name not in names:
            names.append(name)
    return names


def answer_of(response: Mapping[str, Any]) -> str:
    """What a callee answered in one response: its DTMF digits, else its best speech text."""
    digits = response.get("digits")
    if isinstance(digits, str) and digits:
        return digits
    speech = response.get("speech")
    if isinstance(speech, list) and speech and isinstance(speech[0], Mapping):
        text = speech[0].get("text")
        return text if isinstance(text, str) else ""
    return ""


def answers(responses_json: str, names: Sequence[str]) -> list[str]:
    """The `response.<name>` cells of a call: for each name, the answer of the call's last
    response to the input step of that name ("" when none)."""
    if not names or responses_json == "[]":
        return [""] * len(names)
    found: dict[str, str] = {}
    for response in json.loads(responses_json):
        if isinstance(response, Mapping) and isinstance(response.get("name"), str):
            found[response["name"]] = answer_of(response)
    return [found.get(name, "") for name in names]


def csv_header(names: Sequence[str]) -> list[str]:
    return [*COLUMNS, *(safe_cell(RESPONSE_PREFIX + name) for name in names)]


# Cells that need CSV quoting (csv's QUOTE_MINIMAL rule for a comma delimiter).
_NEEDS_QUOTES = re.compile(r'[",\r\n]')


def _text_cell(cell: str) -> str:
    """A cell of free text (a provider's error, a callee's answer): made safe, quoted if need be."""
    if cell[:1] in _FIRST_CHARS:
        cell = safe_cell(cell)
    return '"' + cell.replace('"', '""') + '"' if _NEEDS_QUOTES.search(cell) else cell


def csv_lines(rows: Iterable[Sequence[str]], names: Sequence[str]) -> str:
    """CSV lines (CRLF-ended) from the store's columns (`COLUMNS`, each as text, "" for none), with
    the `response.<name>` cells of `names` after them: what `csv.writer` writes of the cells made
    safe by `safe_cell`, built by hand because this is the export's hot path.

    Only free text is tested: `last_error`, the answers, and a phone number that is not `+` and
    digits (a number refused as invalid is kept as it was given). The other columns are the
    store's own (ids, states, counts, times, `true`/`false`), which hold no comma or quote and
    start with no formula character; the JSON columns start with `{` or `[` and are always quoted."""
    out = []
    for row in rows:
        (call_id, phone, status, outcome, attempts, error, dialed, answered, ended, talk, left, *json_cells) = row
        if error:
            error = _text_cell(error)
        if not (phone[:1] == "+" and phone[1:].isdigit()):
            phone = _text_cell(phone)
        quoted = ['"' + cell.replace('"', '""') + '"' if cell else "" for cell in json_cells]
        line = ",".join(
            (call_id, phone, status, outcome, attempts, error, dialed, answered, ended, talk, left, *quoted)
        )
        if names:
            line += "," + ",".join(_text_cell(a) if a else "" for a in answers(row[-1], names))
        out.append(line)
    return "\r\n".join(out) + "\r\n" if out else ""
