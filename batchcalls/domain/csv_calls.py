"""A CSV of calls, row by row, as the call objects of a `POST /v1/batches` body. Pure: rows of
cells in, call dicts (or problems named by line and column) out; the caller streams the rows.

Columns: `phone_number` (required), `text` (the call's script), `voice_id`, `priority`; a column
`metadata.<key>` is the call's metadata field `<key>`; every other column is a variable filling
`{{column}}` in the text. An empty cell is no value: a call without `text` takes the `text` the
upload's options give, an empty variable leaves its placeholder to its default. Lines are counted
as a spreadsheet counts rows (the header is line 1). `CsvList` holds the rules of the whole list
(`call_lists`) over its groups of rows as they are checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from batchcalls.domain.call_lists import Repeats, Skip
from batchcalls.domain.models import NewBatch, NewCall

REQUIRED = "phone_number"
KNOWN = ("phone_number", "text", "voice_id", "priority")
METADATA_PREFIX = "metadata."
MAX_COLUMNS = 200
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class CsvHeaderError(ValueError):
    """The header cannot be read as calls: `problems` maps `line 1, column <name>` to messages."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{where}: {', '.join(m)}" for where, m in problems.items()))
        self.problems = problems


@dataclass(frozen=True)
class CsvLayout:
    """What each column of a CSV's header is."""

    columns: tuple[str, ...]

    @classmethod
    def of(cls, header: Sequence[str]) -> CsvLayout:
        columns = tuple(cell.strip().removeprefix("\ufeff").strip() for cell in header)
        problems: dict[str, list[str]] = {}
        if REQUIRED not in columns:
            problems["line 1"] = ["a phone_number column is required"]
        if len(columns) > MAX_COLUMNS:
            problems["line 1"] = [f"at most {MAX_COLUMNS} columns"]
        seen: set[str] = set()
        for index, name in enumerate(columns, start=1):
            where = f"line 1, column {index}"
            key = name.removeprefix(METADATA_PREFIX)
            if name in seen:
                problems[where] = [f"{name!r} repeats an earlier column"]
            elif name not in KNOWN and not _NAME.fullmatch(key):
                problems[where] = [f"{name!r} is not a column name (letters, digits, _; metadata.<key> for metadata)"]
            seen.add(name)
        if problems:
            raise CsvHeaderError(problems)
        return cls(columns)

    def call(self, cells: Sequence[str], default_text: str | None) -> dict[str, Any] | str:
        """The call of one row, or what is wrong with its shape."""
        if len(cells) != len(self.columns):
            return f"has {len(cells)} cells, but the header has {len(self.columns)} columns"
        call: dict[str, Any] = {}
        variables: dict[str, str] = {}
        metadata: dict[str, str] = {}
        for name, raw in zip(self.columns, cells, strict=True):
            value = raw.strip()
            if name == "phone_number":
                call["phone_number"] = value
            elif not value:
                continue
            elif name == "text":
                call["script"] = {"text": value}
            elif name == "voice_id":
                call["voice_id"] = value
            elif name == "priority":
                call["priority"] = int(value) if value.isdigit() else value  # a string: a 422 by the schema
            elif name.startswith(METADATA_PREFIX):
                metadata[name.removeprefix(METADATA_PREFIX)] = value
            else:
                variables[name] = value
        if "script" not in call:
            if default_text is None:
                return "has no text: give it in a text column, or the upload's `text` option"
            call["script"] = {"text": default_text}
        if variables:
            call["variables"] = variables
        if metadata:
            call["metadata"] = metadata
        return call

    def column_of(self, field: str) -> str:
        """The CSV column a call field's problem names (`script.text` -> `text`)."""
        top = field.split(".", 1)[0].split("[", 1)[0]
        if top == "script":
            return "text"
        if top in ("variables", "metadata") and "." in field:
            key = field.split(".", 2)[1]
            return key if top == "variables" else METADATA_PREFIX + key
        return top


class CsvList:
    """The rules of a whole CSV over its groups of rows as each is checked (`build_batch_part`):
    a number repeating one of an earlier line (with `dedupe`, across groups: `call_lists.Repeats`),
    skipped calls named by line, and whether any call is left to dial."""

    def __init__(self, *, dedupe: bool, keep_skips: int) -> None:
        self.repeats = Repeats() if dedupe else None
        self.kept = 0  # calls to dial so far
        self.keep_skips = keep_skips
        self.skips: list[Skip] = []  # the first `keep_skips` skipped calls, named by line

    def take(self, part: NewBatch, lines: Sequence[int]) -> tuple[NewBatch, dict[str, list[str]]]:
        """`part` (its call `i` from CSV line `lines[i]`) with its skipped calls' errors named by
        line, and the repeats it holds, by line: `line 9, column phone_number`: `repeats line 3
        (+442079460000)`."""
        calls: list[NewCall] | None = None  # copied when a call is renamed
        repeats: dict[str, list[str]] = {}
        first_place = None if self.repeats is None else self.repeats.first_place
        for index, call in enumerate(part.calls):
            if call.skipped is not None:
                skip = replace(call.skipped, field=f"line {lines[index]}, column {REQUIRED}")
                calls = calls if calls is not None else list(part.calls)
                calls[index] = replace(call, skipped=skip)
                if len(self.skips) < self.keep_skips:
                    self.skips.append(skip)
                continue
            self.kept += 1
            earlier = None if first_place is None else first_place(call.phone_number, lines[index])
            if earlier is not None:
                repeats[f"line {lines[index]}, column {REQUIRED}"] = [f"repeats line {earlier} ({call.phone_number})"]
        return (part if calls is None else replace(part, calls=tuple(calls))), repeats
