"""Calling windows in each recipient's own time: when a window is open, when it opens, when it closes.

Pure arithmetic over `window_spec.CallingWindow`, zone names and aware datetimes (UTC in, UTC
out); the zone database (`zoneinfo`) and phonenumbers' time-zone data are its only inputs.

The definition. For one zone, an instant is inside a span when its local wall time in that zone
(the span's own `timezone`, or the recipient's zone for `"recipient"`) falls in ``[start, end)`` of
the span opened on a local date that is a listed day and not excluded (for a span crossing
midnight, from `start` that date to `end` the next). An instant is inside the window for a zone
when it is inside one of its spans (the union), and inside the window for a recipient when it is
inside for *every* zone of the recipient (the intersection: the window holds wherever the callee
is). Daylight-saving changes need no special case: a `start` in a spring-forward gap opens at the
first instant after the gap (no instant has a wall time in the gap), and a fall-back hour, whose wall
times happen twice, is inside whenever its wall time is (both times).

The recipient's zones (`zones_for_number`) are phonenumbers' zones for the number: one for most
numbers; all of them where the number's prefix covers several (an Australian mobile covers eight,
a US toll-free number the 42 zones of the North American plan, which few windows can satisfy at
once: a window that never holds in all of them never opens). When phonenumbers knows no zone for a
number (``Etc/Unknown``), the number gets every zone of its country calling code, and UTC when even
the country has none (international networks such as +800 or +881).
An empty `zones` reads as UTC.

The functions look for boundaries rather than stepping: for each zone they cut a stretch of time
(a few days, then longer stretches up to `HORIZON`) at its UTC-offset changes, and inside each
piece, where local time is UTC plus one offset, each span's opening and closing wall times are one
subtraction away from their instants. Results are exact to the microsecond.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_zones
from phonenumbers.tzdata import TIMEZONE_DATA

from batchcalls.domain.window_spec import RECIPIENT, CallingWindow, Span, is_zone_name

# How far ahead next_opening and closes_at look before they answer None.
HORIZON = timedelta(days=400)
_FIRST_STRETCH = timedelta(days=4)
# Offset samples are this far apart; two offset changes within one step would go unseen (none
# does in the zone database for the years ahead).
_SAMPLE = timedelta(hours=6)
Interval = tuple[datetime, datetime]  # [start, end), aware UTC


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def zones_for_number(e164: str) -> tuple[str, ...]:
    """The zones a calling window with `"recipient"` must hold in for the number `e164`.

    phonenumbers' zones for the number; for a number it places in no zone, every zone of its
    country calling code; UTC when neither is known. Names the zone database lacks are dropped."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ("UTC",)
    zones = tuple(phone_zones.time_zones_for_number(number))
    if zones == (phone_zones.UNKNOWN_TIMEZONE,):
        zones = _country_zones(number.country_code)
    known = tuple(zone for zone in zones if is_zone_name(zone))
    return known or ("UTC",)


def _country_zones(country_code: int | None) -> tuple[str, ...]:
    # phonenumbers' prefix table has an entry for each country calling code it knows, listing
    # every zone of the country (the one its own country-level lookup reads).
    return tuple(TIMEZONE_DATA.get(str(country_code), ()))


def _distinct(zones: Sequence[str]) -> tuple[str, ...]:
    """`zones` without repeats, in order; UTC for none."""
    return tuple(dict.fromkeys(zones)) or ("UTC",)


def _aware_utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("expected an aware datetime")
    return at.astimezone(UTC)


def _offset(zone: ZoneInfo, at: datetime) -> timedelta:
    offset = at.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _pieces(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, datetime, timedelta]]:
    """[start, end) cut where the zone's UTC offset changes: (piece start, piece end, offset)."""
    pieces = []
    piece_start, offset = start, _offset(zone, start)
    probe = start
    while probe < end:
        following = min(probe + _SAMPLE, end)
        if _offset(zone, following) == offset:
            probe = following
            continue
        # The offset changes in (probe, following], on a whole second (as every change in the
        # zone database does): find the first second with the new offset.
        low, high = math.floor(probe.timestamp()), math.ceil(following.timestamp())
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if _offset(zone, _instant(middle)) == offset else (low, middle)
        change = _instant(high)
        if change >= end:
            break
        pieces.append((piece_start, change, offset))
        piece_start, offset, probe = change, _offset(zone, change), change
    pieces.append((piece_start, end, offset))
    return pieces


def _instant(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _merged(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of `intervals` as sorted, disjoint, non-touching intervals."""
    merged: list[Interval] = []
    for low, high in sorted(intervals):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _intersection(first: list[Interval], second: list[Interval]) -> list[Interval]:
    both: list[Interval] = []
    i = j = 0
    while i < len(first) and j < len(second):
        low, high = max(first[i][0], second[j][0]), min(first[i][1], second[j][1])
        if low < high:
            both.append((low, high))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return both


def _span_intervals(spans: Sequence[Span], zone: ZoneInfo, start: datetime, end: datetime) -> list[Interval]:
    """When, within [start, end), the spans (all read in `zone`) are open: their union."""
    found: list[Interval] = []
    for low, high, offset in _pieces(zone, start, end):
        # In this piece local wall time is the instant plus `offset`, one-to-one.
        first_day = (low + offset).date() - timedelta(days=1)
        last_day = (high + offset).date()
        day = first_day
        while day <= last_day:
            for span in spans:
                if span.opens_on(day):
                    opens, closes = span.bounds(day)
                    since = max(low, (opens - offset).replace(tzinfo=UTC))
                    until = min(high, (closes - offset).replace(tzinfo=UTC))
                    if since < until:
                        found.append((since, until))
            day += timedelta(days=1)
    return _merged(found)


def _open_intervals(window: CallingWindow, zones: Sequence[str], start: datetime, end: datetime) -> list[Interval]:
    """When, within [start, end), the window is open for every zone in `zones`."""
    fixed = [
        interval
        for name in sorted(window.zone_names)
        for interval in _span_intervals([s for s in window.spans if s.timezone == name], _zone(name), start, end)
    ]
    recipient_spans = [span for span in window.spans if span.timezone == RECIPIENT]
    if not recipient_spans:
        return _merged(fixed)
    result = [(start, end)]
    for name in _distinct(zones):
        own = _span_intervals(recipient_spans, _zone(name), start, end)
        result = _intersection(result, _merged([*own, *fixed]))
        if not result:
            break
    return result


def is_open(window: CallingWindow, zones: Sequence[str], at: datetime) -> bool:
    """Whether the window is open at instant `at` for a recipient in every one of `zones`."""
    at = _aware_utc(at)
    for name in _distinct(zones):
        if not any(
            _inside(span, _zone(name if span.timezone == RECIPIENT else span.timezone), at) for span in window.spans
        ):
            return False
    return True


def _inside(span: Span, zone: ZoneInfo, at: datetime) -> bool:
    wall = at.astimezone(zone).replace(tzinfo=None)
    for day in (wall.date(), wall.date() - timedelta(days=1)):
        if span.opens_on(day):
            opens, closes = span.bounds(day)
            if opens <= wall < closes:
                return True
    return False


def _stretches(at: datetime) -> Iterable[tuple[datetime, datetime]]:
    """[at, at + HORIZON) in consecutive stretches, each twice as long as the one before."""
    start, length = at, _FIRST_STRETCH
    while start < at + HORIZON:
        end = min(start + length, at + HORIZON)
        yield start, end
        start, length = end, length * 2


def next_opening(window: CallingWindow, zones: Sequence[str], at: datetime) -> datetime | None:
    """The first instant at or after `at` when the window is open (`at` itself when it is open
    then); None when it does not open within `HORIZON` (every opening day excluded, or zones whose
    windows never overlap)."""
    at = _aware_utc(at)
    if is_open(window, zones, at):
        return at
    for start, end in _stretches(at):
        intervals = _open_intervals(window, zones, start, end)
        if intervals:
            return intervals[0][0]
    return None


def closes_at(window: CallingWindow, zones: Sequence[str], at: datetime) -> datetime | None:
    """The first instant at or after `at` when the window is closed: when the window open at
    `at` closes (`at` itself when it is closed then); None when it stays open through `HORIZON`."""
    at = _aware_utc(at)
    if not is_open(window, zones, at):
        return at
    for start, end in _stretches(at):
        intervals = _open_intervals(window, zones, start, end)
        if not intervals or intervals[0][0] != start:
            return start
        if intervals[0][1] < end:
            return intervals[0][1]
    return None


def push_into_window(due: datetime, window: CallingWindow, zones: Sequence[str]) -> datetime | None:
    """When a retry due at `due` may be dialed: `due` itself inside the window, else the next
    opening (None when the window does not open within `HORIZON`)."""
    return next_opening(window, zones, due)
