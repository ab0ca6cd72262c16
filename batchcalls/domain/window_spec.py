"""A calling window as a user writes it: what is wrong with one, its parsed form, its normal form.

Pure functions over plain data (the JSON already loaded). A `calling_window` is one object or a
list of 1 to `MAX_SPANS` objects whose union is the window (several windows a day, such as a lunch
break). Each object:

- `days`: the local days on which the window *opens*, a list of `"mon"` .. `"sun"` without
  repeats (default: every day);
- `start`, `end`: local wall times `"HH:MM"` (24-hour; `end` may be `"24:00"`). `start` after
  `end` means the window crosses midnight: it opens on a listed day and closes the next day.
  `start` equal to `end` is refused (the whole day is `"00:00"` to `"24:00"`);
- `timezone`: `"recipient"` (the zones of the number called, see `windows.zones_for_number`) or
  an IANA name such as `"America/New_York"` (default `"recipient"`);
- `exclude_dates`: local dates `"YYYY-MM-DD"` (holidays, at most `MAX_EXCLUDED_DATES`) on which
  no window opens; a window that opened the evening before still runs past midnight into one.

What an instant inside the window means is written in `batchcalls.domain.windows`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import available_timezones

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
RECIPIENT = "recipient"
MAX_SPANS = 8
MAX_EXCLUDED_DATES = 366
FIELDS = ("days", "start", "end", "timezone", "exclude_dates")
MINUTES_A_DAY = 24 * 60
# Names the zone database holds that are not places: the host's own zone and test entries.
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|24:00")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_FORMAT = 'must be a time "HH:MM" (24-hour, such as "09:00")'

# Problems keyed by a path relative to the window: "" for the window itself, "start",
# "days[2]" for a single object; "[1].start", "[0].exclude_dates[3]" for a list.
Problems = dict[str, list[str]]


@dataclass(frozen=True)
class Span:
    """One object of a calling window, parsed: times as minutes after local midnight."""

    start: int  # 0 .. 1439
    end: int  # 1 .. 1440; before `start` when the span crosses midnight
    days: frozenset[int] = frozenset(range(7))  # date.weekday() numbers
    timezone: str = RECIPIENT
    exclude_dates: frozenset[date] = frozenset()

    @property
    def crosses_midnight(self) -> bool:
        return self.start > self.end

    def opens_on(self, day: date) -> bool:
        """Whether the span opens on local date `day` (a listed day, not excluded)."""
        return day.weekday() in self.days and day not in self.exclude_dates

    def bounds(self, day: date) -> tuple[datetime, datetime]:
        """The local wall times (naive) at which the span opened on `day` opens and closes."""
        midnight = datetime.combine(day, time())
        close = midnight + timedelta(minutes=self.end + (MINUTES_A_DAY if self.crosses_midnight else 0))
        return midnight + timedelta(minutes=self.start), close


@dataclass(frozen=True)
class CallingWindow:
    """A calling window: the union of its spans."""

    spans: tuple[Span, ...]

    @property
    def zone_names(self) -> frozenset[str]:
        """The fixed zones its spans name (without `"recipient"`)."""
        return frozenset(span.timezone for span in self.spans if span.timezone != RECIPIENT)


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_PLACES


def is_zone_name(name: object) -> bool:
    """Whether `name` is an IANA time-zone name the zone database knows."""
    return isinstance(name, str) and name in _zone_names()


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _add(problems: Problems, path: str, message: str) -> None:
    problems.setdefault(path, []).append(message)


def _days_problems(days: object, path: str, problems: Problems) -> None:
    known = ", ".join(DAY_NAMES)
    if not isinstance(days, list):
        _add(problems, path, f"must be a list of days ({known})")
        return
    if not days:
        _add(problems, path, "must name at least one day (leave days out for every day)")
    seen: set[str] = set()
    for index, day in enumerate(days):
        if not isinstance(day, str) or day not in DAY_NAMES:
            _add(problems, f"{path}[{index}]", f"must be one of {known}")
        elif day in seen:
            _add(problems, f"{path}[{index}]", f"repeats {day!r}")
        else:
            seen.add(day)


def _times_problems(span: Mapping[str, Any], prefix: str, problems: Problems) -> None:
    for name in ("start", "end"):
        if name not in span:
            _add(problems, prefix + name, "is required")
        elif not isinstance(span[name], str) or not _TIME.fullmatch(span[name]):
            _add(problems, prefix + name, _TIME_FORMAT)
        elif name == "start" and span[name] == "24:00":
            _add(problems, prefix + name, "must be from 00:00 to 23:59 (24:00 is only an end)")
    start, end = span.get("start"), span.get("end")
    if prefix + "start" not in problems and prefix + "end" not in problems and start == end:
        _add(problems, prefix + "end", 'must differ from start (a whole day is "00:00" to "24:00")')


def _exclude_dates_problems(dates: object, path: str, problems: Problems) -> None:
    if not isinstance(dates, list):
        _add(problems, path, 'must be a list of dates "YYYY-MM-DD"')
        return
    if len(dates) > MAX_EXCLUDED_DATES:
        _add(problems, path, f"must hold at most {MAX_EXCLUDED_DATES} dates (it has {len(dates)})")
        return
    seen: set[str] = set()
    for index, text in enumerate(dates):
        try:
            if not isinstance(text, str) or not _DATE.fullmatch(text):
                raise ValueError(text)
            date.fromisoformat(text)
        except ValueError:
            _add(problems, f"{path}[{index}]", 'must be a date "YYYY-MM-DD" (such as "2026-12-25")')
            continue
        if text in seen:
            _add(problems, f"{path}[{index}]", f"repeats {text}")
        seen.add(text)


def _span_problems(span: object, prefix: str, problems: Problems) -> None:
    """Problems of one object; `prefix` is "" or "[i]." and names its fields' paths."""
    if not isinstance(span, Mapping):
        _add(problems, prefix.rstrip("."), "must be an object with start and end")
        return
    for name in span:
        if name not in FIELDS:
            _add(problems, f"{prefix}{name}", f"is not a field of a calling window; known: {', '.join(FIELDS)}")
    if "days" in span:
        _days_problems(span["days"], prefix + "days", problems)
    _times_problems(span, prefix, problems)
    if "timezone" in span:
        zone = span["timezone"]
        if zone != RECIPIENT and not is_zone_name(zone):
            _add(problems, prefix + "timezone", f'must be "{RECIPIENT}" or an IANA time zone such as "Europe/London"')
    if "exclude_dates" in span:
        _exclude_dates_problems(span["exclude_dates"], prefix + "exclude_dates", problems)


def calling_window_problems(window: object) -> Problems:
    """Everything wrong with `window` (a `calling_window` as JSON loaded it), keyed by a path
    relative to the window ("" for the window itself). Empty when the window is fine."""
    problems: Problems = {}
    if isinstance(window, list):
        if not 1 <= len(window) <= MAX_SPANS:
            _add(problems, "", f"must hold 1 to {MAX_SPANS} windows (it has {len(window)})")
        else:
            for index, span in enumerate(window):
                _span_problems(span, f"[{index}].", problems)
    elif isinstance(window, Mapping):
        _span_problems(window, "", problems)
    else:
        _add(problems, "", f"must be an object or a list of 1 to {MAX_SPANS} objects")
    return problems


def _span(span: Mapping[str, Any]) -> Span:
    days = span.get("days", DAY_NAMES)
    return Span(
        start=_minutes(span["start"]),
        end=_minutes(span["end"]),
        days=frozenset(DAY_NAMES.index(day) for day in days),
        timezone=span.get("timezone", RECIPIENT),
        exclude_dates=frozenset(date.fromisoformat(text) for text in span.get("exclude_dates", [])),
    )


def parse_calling_window(window: object) -> CallingWindow:
    """The parsed form of a `calling_window` (one object or a list of them, or the normal form
    `to_json` gives). Raises ValueError naming its problems if it has any."""
    problems = calling_window_problems(window)
    if problems:
        listed = "; ".join(f"{path or 'calling_window'}: {', '.join(messages)}" for path, messages in problems.items())
        raise ValueError(f"invalid calling window: {listed}")
    spans = window if isinstance(window, list) else [window]
    # Every span is an object once the window has no problems.
    return CallingWindow(spans=tuple(_span(span) for span in spans if isinstance(span, Mapping)))


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def to_json(window: CallingWindow) -> list[dict[str, Any]]:
    """The normal form for storage: always a list, every field present, days in week order and
    excluded dates sorted. `parse_calling_window(to_json(w)) == w`."""
    return [
        {
            "days": [DAY_NAMES[day] for day in sorted(span.days)],
            "start": _clock(span.start),
            "end": _clock(span.end),
            "timezone": span.timezone,
            "exclude_dates": [day.isoformat() for day in sorted(span.exclude_dates)],
        }
        for span in window.spans
    ]
