"""A `calling_window` as a user sends it: its problems named by path, its parsed and normal forms."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from batchcalls.domain.window_spec import (
    CallingWindow,
    Span,
    calling_window_problems,
    parse_calling_window,
    to_json,
)


def test_a_plain_window_has_no_problems_and_defaults_to_every_day_in_the_recipients_zone() -> None:
    window = {"start": "09:00", "end": "20:00"}
    assert calling_window_problems(window) == {}
    assert parse_calling_window(window) == CallingWindow(
        spans=(Span(start=9 * 60, end=20 * 60, days=frozenset(range(7)), timezone="recipient"),)
    )


def test_a_full_window_parses_every_field() -> None:
    window = {
        "days": ["sat", "mon"],
        "start": "22:30",
        "end": "06:15",
        "timezone": "Asia/Kolkata",
        "exclude_dates": ["2026-12-25", "2026-01-01"],
    }
    span = parse_calling_window(window).spans[0]
    assert span == Span(
        start=22 * 60 + 30,
        end=6 * 60 + 15,
        days=frozenset({0, 5}),
        timezone="Asia/Kolkata",
        exclude_dates=frozenset({date(2026, 12, 25), date(2026, 1, 1)}),
    )
    assert span.crosses_midnight


def test_the_normal_form_is_a_list_with_every_field_in_order_and_parses_back_to_the_same_window() -> None:
    window = parse_calling_window(
        [
            {"start": "09:00", "end": "12:30", "days": ["fri", "mon"], "exclude_dates": ["2026-12-25", "2026-01-01"]},
            {"start": "13:30", "end": "24:00", "timezone": "Europe/London"},
        ]
    )
    normal = to_json(window)
    assert normal == [
        {
            "days": ["mon", "fri"],
            "start": "09:00",
            "end": "12:30",
            "timezone": "recipient",
            "exclude_dates": ["2026-01-01", "2026-12-25"],
        },
        {
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "start": "13:30",
            "end": "24:00",
            "timezone": "Europe/London",
            "exclude_dates": [],
        },
    ]
    assert parse_calling_window(normal) == window


@pytest.mark.parametrize(
    ("window", "problems"),
    [
        ("09:00-17:00", {"": ["must be an object or a list of 1 to 8 objects"]}),
        ([], {"": ["must hold 1 to 8 windows (it has 0)"]}),
        ([{"start": "09:00", "end": "10:00"}] * 9, {"": ["must hold 1 to 8 windows (it has 9)"]}),
        ([{"start": "09:00", "end": "10:00"}, "lunch"], {"[1]": ["must be an object with start and end"]}),
        ({}, {"start": ["is required"], "end": ["is required"]}),
        ({"start": "9:00", "end": "17:00"}, {"start": ['must be a time "HH:MM" (24-hour, such as "09:00")']}),
        ({"start": "09:00", "end": "25:00"}, {"end": ['must be a time "HH:MM" (24-hour, such as "09:00")']}),
        ({"start": "09:00", "end": 17}, {"end": ['must be a time "HH:MM" (24-hour, such as "09:00")']}),
        ({"start": "24:00", "end": "06:00"}, {"start": ["must be from 00:00 to 23:59 (24:00 is only an end)"]}),
        ({"start": "09:00", "end": "09:00"}, {"end": ['must differ from start (a whole day is "00:00" to "24:00")']}),
        (
            [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "20:00", "lunch": True}],
            {"[1].lunch": ["is not a field of a calling window; known: days, start, end, timezone, exclude_dates"]},
        ),
    ],
)
def test_the_shape_and_the_times_are_checked(window: object, problems: dict[str, list[str]]) -> None:
    assert calling_window_problems(window) == problems


@pytest.mark.parametrize(
    ("days", "problems"),
    [
        ("mon", {"days": ["must be a list of days (mon, tue, wed, thu, fri, sat, sun)"]}),
        ([], {"days": ["must name at least one day (leave days out for every day)"]}),
        (
            ["mon", "Tuesday", "wed", "mon", 3],
            {
                "days[1]": ["must be one of mon, tue, wed, thu, fri, sat, sun"],
                "days[3]": ["repeats 'mon'"],
                "days[4]": ["must be one of mon, tue, wed, thu, fri, sat, sun"],
            },
        ),
    ],
)
def test_days_are_checked_one_by_one(days: object, problems: dict[str, list[str]]) -> None:
    assert calling_window_problems({"days": days, "start": "09:00", "end": "17:00"}) == problems


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC", "recipient"])
def test_a_known_zone_or_recipient_is_accepted(zone: str) -> None:
    assert calling_window_problems({"start": "09:00", "end": "17:00", "timezone": zone}) == {}


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "localtime", "../../etc/passwd", "", None, 5, "EST-5"])
def test_an_unknown_zone_is_named(zone: object) -> None:
    problems = calling_window_problems([{"start": "09:00", "end": "17:00", "timezone": zone}])
    assert problems == {"[0].timezone": ['must be "recipient" or an IANA time zone such as "Europe/London"']}


def test_excluded_dates_are_checked_one_by_one() -> None:
    window: dict[str, Any] = {
        "start": "09:00",
        "end": "17:00",
        "exclude_dates": ["2026-12-25", "2026-02-30", "20261226", "2026-12-25", None],
    }
    date_format = 'must be a date "YYYY-MM-DD" (such as "2026-12-25")'
    assert calling_window_problems([{"start": "08:00", "end": "09:00"}, window]) == {
        "[1].exclude_dates[1]": [date_format],
        "[1].exclude_dates[2]": [date_format],
        "[1].exclude_dates[3]": ["repeats 2026-12-25"],
        "[1].exclude_dates[4]": [date_format],
    }


def test_at_most_366_excluded_dates() -> None:
    every_day = [date.fromordinal(date(2026, 1, 1).toordinal() + n).isoformat() for n in range(367)]
    assert calling_window_problems({"start": "09:00", "end": "17:00", "exclude_dates": every_day[:366]}) == {}
    assert calling_window_problems({"start": "09:00", "end": "17:00", "exclude_dates": every_day}) == {
        "exclude_dates": ["must hold at most 366 dates (it has 367)"]
    }
    assert calling_window_problems({"start": "09:00", "end": "17:00", "exclude_dates": "2026-12-25"}) == {
        "exclude_dates": ['must be a list of dates "YYYY-MM-DD"']
    }


def test_every_problem_of_every_window_is_reported_at_once() -> None:
    problems = calling_window_problems(
        [
            {"days": ["mon", "mon"], "start": "09:00", "end": "9pm"},
            {"start": "13:00", "end": "13:00", "timezone": "Nowhere"},
        ]
    )
    assert sorted(problems) == ["[0].days[1]", "[0].end", "[1].end", "[1].timezone"]


def test_parsing_a_window_with_problems_raises_and_names_them() -> None:
    with pytest.raises(ValueError, match=r"\[0\]\.end: must be a time"):
        parse_calling_window([{"start": "09:00", "end": "9pm"}])
