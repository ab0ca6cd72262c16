"""CSV input of `batchcalls submit`: rows become calls, and every problem is named by row and
column the way a spreadsheet shows them (the header is row 1)."""

from __future__ import annotations

import pytest

from batchcalls.ops.csvinput import CsvProblems, calls_from_csv, describe_api_details


def problems_of(text: str, default_text: str | None = None, default_voice: str | None = None) -> list[str]:
    with pytest.raises(CsvProblems) as caught:
        calls_from_csv(text, default_text, default_voice)
    return caught.value.problems


def test_rows_with_text_column_become_calls() -> None:
    text = (
        'phone_number,text,voice_id,priority\n+442079460010,Hello there,voice_female_1,3\n+442079460021,"Hi, again",,\n'
    )
    assert calls_from_csv(text) == [
        {
            "phone_number": "+442079460010",
            "script": {"text": "Hello there"},
            "voice_id": "voice_female_1",
            "priority": 3,
        },
        {"phone_number": "+442079460021", "script": {"text": "Hi, again"}},
    ]


def test_without_text_column_the_default_text_is_used() -> None:
    calls = calls_from_csv("phone_number\n+442079460010\n+442079460027\n", default_text="Default script")
    assert [c["script"] for c in calls] == [{"text": "Default script"}] * 2
    assert all("voice_id" not in c and "priority" not in c for c in calls)


def test_empty_text_cell_falls_back_to_the_default_text() -> None:
    calls = calls_from_csv("phone_number,text\n+442079460010,\n+442079460027,Own text\n", default_text="Default")
    assert [c["script"]["text"] for c in calls] == ["Default", "Own text"]


def test_without_text_or_default_each_row_is_a_problem() -> None:
    assert problems_of("phone_number\n+442079460010\n+442079460027\n") == [
        "row 2, column text: missing (or pass --text)",
        "row 3, column text: missing (or pass --text)",
    ]


def test_default_voice_fills_rows_without_one() -> None:
    text = "phone_number,text,voice_id\n+442079460010,Hi,voice_male_1\n+442079460027,Hi,\n"
    calls = calls_from_csv(text, default_voice="voice_female_2")
    assert [c["voice_id"] for c in calls] == ["voice_male_1", "voice_female_2"]
    calls = calls_from_csv("phone_number\n+442079460010\n", default_text="Hi", default_voice="voice_female_2")
    assert calls[0]["voice_id"] == "voice_female_2"


def test_no_voice_at_all_leaves_voice_id_out() -> None:
    calls = calls_from_csv("phone_number,voice_id\n+442079460010,\n", default_text="Hi")
    assert "voice_id" not in calls[0]


@pytest.mark.parametrize(("cell", "expected"), [("0", 0), ("9", 9), (" 4 ", 4), ("-1", -1), ("", None)])
def test_priority_parsing(cell: str, expected: int | None) -> None:
    calls = calls_from_csv(f"phone_number,text,priority\n+442079460010,Hi,{cell}\n")
    assert calls[0].get("priority") == expected


@pytest.mark.parametrize("cell", ["high", "1.5", "2x"])
def test_priority_that_is_not_a_whole_number_is_named_by_row_and_column(cell: str) -> None:
    text = f"phone_number,text,priority\n+442079460010,Hi,1\n+442079460027,Hi,{cell}\n"
    assert problems_of(text) == [f"row 3, column priority: {cell!r} is not a whole number"]


def test_every_problem_is_reported_at_once_with_spreadsheet_row_numbers() -> None:
    text = (
        "phone_number,text,priority\n"
        "+442079460010,Hi,1\n"  # row 2: fine
        ",Hi,2\n"  # row 3: no number
        "+442079460027,,x\n"
    )  # row 4: no text, bad priority
    assert problems_of(text) == [
        "row 3, column phone_number: missing",
        "row 4, column text: missing (or pass --text)",
        "row 4, column priority: 'x' is not a whole number",
    ]


def test_cells_and_headers_are_stripped() -> None:
    calls = calls_from_csv(" phone_number , text \n +442079460010 ,  Hello  \n")
    assert calls == [{"phone_number": "+442079460010", "script": {"text": "Hello"}}]


def test_missing_phone_number_column() -> None:
    assert problems_of("number,text\n+442079460010,Hi\n") == ["row 1: a phone_number column is required"]


def test_empty_file_has_no_phone_number_column() -> None:
    assert problems_of("") == ["row 1: a phone_number column is required"]


def test_header_only_has_no_rows() -> None:
    assert problems_of("phone_number,text\n") == ["the CSV has no rows"]


def test_unknown_columns_are_named() -> None:
    problems = problems_of("phone_number,text,name,email\n+442079460010,Hi,Ann,a@example.com\n")
    assert problems == [
        "row 1, column name: unknown column (known: phone_number, text, voice_id, priority)",
        "row 1, column email: unknown column (known: phone_number, text, voice_id, priority)",
    ]


def test_byte_order_mark_of_a_spreadsheet_export_is_ignored() -> None:
    calls = calls_from_csv("\ufeffphone_number,text\n+442079460010,Hi\n")
    assert calls == [{"phone_number": "+442079460010", "script": {"text": "Hi"}}]


def test_row_with_more_cells_than_the_header_is_a_problem_not_a_crash() -> None:
    text = "phone_number,text\n+442079460010,Hi\n+442079460027,Hi,extra\n"
    assert problems_of(text) == ["row 3: 3 cells, but the header has 2 columns"]


def test_row_with_fewer_cells_than_the_header() -> None:
    calls = calls_from_csv("phone_number,text,voice_id\n+442079460010,Hi\n")
    assert calls == [{"phone_number": "+442079460010", "script": {"text": "Hi"}}]


def test_quoted_cell_with_a_newline_keeps_row_numbers_in_records() -> None:
    text = 'phone_number,text,priority\n+442079460010,"line one\nline two",1\n+442079460027,Hi,bad\n'
    assert problems_of(text) == ["row 3, column priority: 'bad' is not a whole number"]


# --- API error details -----------------------------------------------------------------------


def test_describe_api_details_maps_call_index_to_csv_row_and_column() -> None:
    details = {"calls[3].phone_number": ["not a valid phone number"]}
    assert describe_api_details(details, from_csv=True) == ["row 5, column phone_number: not a valid phone number"]


def test_describe_api_details_maps_script_paths_to_the_text_column() -> None:
    details = {"calls[0].script.text": ["too long"], "calls[12].priority": ["must be 0..9"]}
    assert describe_api_details(details, from_csv=True) == [
        "row 2, column text: too long",
        "row 14, column priority: must be 0..9",
    ]


def test_describe_api_details_for_a_whole_row() -> None:
    assert describe_api_details({"calls[1]": ["duplicate"]}, from_csv=True) == ["row 3: duplicate"]


def test_describe_api_details_joins_messages_and_keeps_other_paths() -> None:
    details: dict[str, list[str] | str] = {"concurrency": ["too high", "see limits"], "calls": "too many"}
    assert describe_api_details(details, from_csv=True) == ["concurrency: too high; see limits", "calls: too many"]


def test_describe_api_details_of_json_input_keeps_api_paths() -> None:
    details = {"calls[3].phone_number": ["not a valid phone number"]}
    assert describe_api_details(details, from_csv=False) == ["calls[3].phone_number: not a valid phone number"]


def test_describe_api_details_without_details() -> None:
    assert describe_api_details(None, from_csv=True) == []
