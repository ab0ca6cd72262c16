"""Turn a CSV of calls into a POST /v1/batches body. Pure: takes text, returns a dict or the
problems found, each named by row and column."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

COLUMNS = ("phone_number", "text", "voice_id", "priority")


class CsvProblems(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def calls_from_csv(
    text: str, default_text: str | None = None, default_voice: str | None = None
) -> list[dict[str, Any]]:
    """Rows become calls; row numbers in problems count the header as row 1, like a spreadsheet."""
    # A spreadsheet's "CSV UTF-8" export starts with a byte order mark.
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    problems = []
    if "phone_number" not in header:
        raise CsvProblems(["row 1: a phone_number column is required"])
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise CsvProblems([f"row 1, column {h}: unknown column (known: {', '.join(COLUMNS)})" for h in unknown])
    calls = []
    for row_number, raw in enumerate(reader, start=2):
        extra = raw.pop(None, None)  # cells beyond the header's columns
        if extra:
            problems.append(
                f"row {row_number}: {len(header) + len(extra)} cells, but the header has {len(header)} columns"
            )
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        call: dict[str, Any] = {}
        if not row.get("phone_number"):
            problems.append(f"row {row_number}, column phone_number: missing")
        call["phone_number"] = row.get("phone_number", "")
        text_value = row.get("text") or default_text
        if not text_value:
            problems.append(f"row {row_number}, column text: missing (or pass --text)")
        call["script"] = {"text": text_value or ""}
        voice = row.get("voice_id") or default_voice
        if voice:
            call["voice_id"] = voice
        if row.get("priority"):
            try:
                call["priority"] = int(row["priority"])
            except ValueError:
                problems.append(f"row {row_number}, column priority: {row['priority']!r} is not a whole number")
        calls.append(call)
    if not calls and not problems:
        problems.append("the CSV has no rows")
    if problems:
        raise CsvProblems(problems)
    return calls


def describe_api_details(details: Mapping[str, list[str] | str] | None, *, from_csv: bool) -> list[str]:
    """API error details, with `calls[i].field` turned into CSV row and column when useful."""
    lines = []
    for path, messages in (details or {}).items():
        where = path
        if from_csv and path.startswith("calls["):
            index, _, rest = path[len("calls[") :].partition("]")
            column = rest.lstrip(".").split(".")[0].split("[")[0]
            column = "text" if column == "script" else column
            if index.isdigit():
                where = f"row {int(index) + 2}" + (f", column {column}" if column else "")
        lines.append(f"{where}: {'; '.join(messages) if isinstance(messages, list) else messages}")
    return lines
