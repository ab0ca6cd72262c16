"""The results export's pure parts: choosing the format, the CSV's answer columns and rows, and
the escaping of cells a spreadsheet would run as formulas."""

from __future__ import annotations

import csv
import io
import json

import pytest

from batchcalls.domain.errors import InvalidRequest
from batchcalls.domain.results import COLUMNS, answer_columns, choose_format, csv_header, csv_lines, safe_cell


def test_the_query_wins_then_accept_then_jsonl() -> None:
    assert choose_format("csv", ["application/x-ndjson"]) == "csv"
    assert choose_format(None, ["text/html", "text/csv", "application/x-ndjson"]) == "csv"
    assert choose_format(None, ["application/x-ndjson"]) == "jsonl"
    assert choose_format(None, ["*/*"]) == "jsonl"
    assert choose_format(None, []) == "jsonl"
    with pytest.raises(InvalidRequest) as refused:
        choose_format("xlsx", [])
    assert "format" in refused.value.details


@pytest.mark.parametrize("cell", ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\r=1", "+", "-", "+1 555"])
def test_a_formula_like_cell_is_made_text(cell: str) -> None:
    assert safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["+442071234567", "-3.5", "12", "hello", "", '{"a": "=1"}', "call_1"])
def test_a_plain_number_or_text_is_kept(cell: str) -> None:
    assert safe_cell(cell) == cell


def csv_row(row: list[str], names: list[str]) -> list[str]:
    """What `csv_lines` writes of one row, read back as cells."""
    (cells,) = list(csv.reader(io.StringIO(csv_lines([row], names), newline="")))
    return cells


CELLS = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\r=1", "+", "-", "+1 555", "+44", "-3.5", "+4.", "a=b", "x"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("column", ["phone_number", "last_error"])
def test_free_text_is_escaped_and_quoted_as_csv_writer_would(cell: str, column: str) -> None:
    """csv_lines builds lines by hand: read back as CSV, they must be the safe cells."""
    for value in (cell, cell + ', "quoted"\nline'):
        row = _row([], last_error="+442071234567")
        row[COLUMNS.index(column)] = value
        assert csv_row(row, []) == [safe_cell(c) for c in row]


def test_json_cells_are_quoted_and_none_is_empty() -> None:
    row = _row([{"name": "menu", "digits": "1"}], metadata='{"a": "=1, \\"b\\""}')
    assert csv_row(row, ["menu"]) == [*row, "1"]
    assert csv_row(row, ["menu"])[COLUMNS.index("metadata")] == '{"a": "=1, \\"b\\""}'
    assert csv_lines([], ["menu"]) == ""


SCRIPT = {
    "type": None,
    "steps": [
        {"type": "text", "text": "Hi"},
        {"type": "input", "dtmf": True, "name": "menu"},
        {"type": "input", "speech": True},  # unnamed: in `responses` only
        {"type": "input", "speech": True, "name": "=feedback"},
        {"type": "input", "dtmf": True, "name": "menu"},
    ],
}


def test_each_named_input_step_is_one_response_column_once() -> None:
    names = answer_columns(SCRIPT)
    assert names == ["menu", "=feedback"]
    assert csv_header(names)[len(COLUMNS) :] == ["response.menu", "response.=feedback"]  # starts with "r": safe
    assert answer_columns(None) == [] and answer_columns({"steps": [{"type": "text", "text": "x"}]}) == []


def _row(responses: list[dict[str, object]], **cells: str) -> list[str]:
    base = dict.fromkeys(COLUMNS, "")
    base.update(id="call_1", phone_number="+442071234567", attempts="1", voicemail_left="false")
    base.update(cells, responses=json.dumps(responses))
    return [base[c] for c in COLUMNS]


def test_a_row_gives_the_last_answer_to_each_named_step() -> None:
    responses = [
        {"name": "menu", "digits": "1", "speech": []},
        {"name": "=feedback", "digits": None, "speech": [{"text": "=great", "confidence": 0.9}]},
        {"name": "menu", "digits": "2", "speech": []},
    ]
    row = csv_row(_row(responses, last_error="-busy line", metadata='{"k": 1}'), ["menu", "=feedback", "other"])
    cells = dict(zip([*COLUMNS, "menu", "feedback", "other"], row, strict=True))
    assert (cells["menu"], cells["feedback"], cells["other"]) == ("2", "'=great", "")
    assert (cells["phone_number"], cells["last_error"], cells["metadata"]) == (
        "+442071234567",
        "'-busy line",
        '{"k": 1}',
    )
    assert (cells["outcome"], cells["voicemail_left"], cells["attempts"]) == ("", "false", "1")
    assert csv_row(_row([]), ["menu"])[-1] == ""
