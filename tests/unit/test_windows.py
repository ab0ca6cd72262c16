"""Calling-window arithmetic in each recipient's own zones.

Every expected instant is written out in UTC, worked from the zone's offset on that date (noted
beside it), never recomputed by the code under test.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from batchcalls.domain.clock import OffsetClock, SystemClock
from batchcalls.domain.window_spec import CallingWindow, parse_calling_window
from batchcalls.domain.windows import closes_at, is_open, next_opening, push_into_window, zones_for_number

NEW_YORK = ("America/New_York",)
LOS_ANGELES = ("America/Los_Angeles",)
LONDON = ("Europe/London",)
KOLKATA = ("Asia/Kolkata",)
LORD_HOWE = ("Australia/Lord_Howe",)
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(value: Any) -> CallingWindow:
    return parse_calling_window(value)


def assert_opening(w: CallingWindow, zones: tuple[str, ...], at: datetime, opens: datetime, closes: datetime) -> None:
    """From `at` (closed), the window opens at `opens` and that opening closes at `closes`."""
    assert not is_open(w, zones, at)
    assert next_opening(w, zones, at) == opens
    assert not is_open(w, zones, opens - timedelta(seconds=1))
    assert is_open(w, zones, opens)
    assert closes_at(w, zones, opens) == closes
    assert is_open(w, zones, closes - timedelta(seconds=1))
    assert not is_open(w, zones, closes)


# --- one zone, ordinary days ---------------------------------------------------------------


def test_new_york_business_hours_in_winter() -> None:
    w = window({"days": WEEKDAYS, "start": "09:00", "end": "20:00"})
    # Monday 2026-01-05, EST (UTC-5): 09:00 is 14:00Z, 20:00 is 01:00Z the next day.
    assert_opening(w, NEW_YORK, utc(2026, 1, 5, 13), utc(2026, 1, 5, 14), utc(2026, 1, 6, 1))
    # Friday evening to Monday morning.
    assert next_opening(w, NEW_YORK, utc(2026, 1, 10, 1)) == utc(2026, 1, 12, 14)


def test_the_answer_is_exact_to_the_second_and_open_returns_at_itself() -> None:
    w = window({"start": "09:00", "end": "20:00"})
    almost = datetime(2026, 1, 5, 13, 59, 59, 500_000, tzinfo=UTC)
    assert next_opening(w, NEW_YORK, almost) == utc(2026, 1, 5, 14)
    inside = datetime(2026, 1, 5, 15, 12, 7, 123_456, tzinfo=UTC)
    assert next_opening(w, NEW_YORK, inside) == inside
    assert closes_at(w, NEW_YORK, inside) == utc(2026, 1, 6, 1)
    closed = utc(2026, 1, 6, 2)
    assert closes_at(w, NEW_YORK, closed) == closed


def test_any_aware_datetime_is_read_and_the_answer_is_utc() -> None:
    w = window({"start": "09:00", "end": "20:00"})
    eastern_morning = datetime.fromisoformat("2026-01-05T08:00:00-05:00")
    opening = next_opening(w, NEW_YORK, eastern_morning)
    assert opening == utc(2026, 1, 5, 14)
    assert opening is not None and opening.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="aware"):
        next_opening(w, NEW_YORK, datetime(2026, 1, 5, 8))


def test_kolkata_half_hour_offset_and_a_lunch_break() -> None:
    w = window([{"start": "09:00", "end": "13:00"}, {"start": "14:00", "end": "18:00"}])
    # IST is UTC+5:30 all year: 09:00 is 03:30Z, 13:00 07:30Z, 14:00 08:30Z, 18:00 12:30Z.
    assert_opening(w, KOLKATA, utc(2026, 6, 1, 3), utc(2026, 6, 1, 3, 30), utc(2026, 6, 1, 7, 30))
    assert_opening(w, KOLKATA, utc(2026, 6, 1, 7, 45), utc(2026, 6, 1, 8, 30), utc(2026, 6, 1, 12, 30))
    assert next_opening(w, KOLKATA, utc(2026, 6, 1, 12, 30)) == utc(2026, 6, 2, 3, 30)


def test_touching_windows_are_one_opening() -> None:
    w = window([{"start": "20:00", "end": "24:00"}, {"start": "00:00", "end": "08:00"}])
    # London in January is UTC: open 20:00Z until 08:00Z the next morning, without a gap.
    assert closes_at(w, LONDON, utc(2026, 1, 5, 21)) == utc(2026, 1, 6, 8)


def test_a_window_that_is_always_open_never_closes() -> None:
    w = window({"start": "00:00", "end": "24:00"})
    assert closes_at(w, LORD_HOWE, utc(2026, 1, 5)) is None


def test_a_fixed_zone_ignores_the_recipients_zones() -> None:
    w = window({"start": "09:00", "end": "17:00", "timezone": "Europe/London"})
    # Whoever is called, it is London's 09:00 (BST, UTC+1, on 2026-06-01).
    assert_opening(w, KOLKATA, utc(2026, 6, 1, 2), utc(2026, 6, 1, 8), utc(2026, 6, 1, 16))


# --- daylight-saving changes ---------------------------------------------------------------


def test_new_york_spring_forward_a_start_in_the_gap_opens_when_the_gap_ends() -> None:
    w = window({"start": "02:30", "end": "05:00"})
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00Z; 02:30 never happens that night.
    assert_opening(w, NEW_YORK, utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 9))
    # The night before (EST) and after (EDT) open at 02:30 as usual.
    assert next_opening(w, NEW_YORK, utc(2026, 3, 7)) == utc(2026, 3, 7, 7, 30)
    assert next_opening(w, NEW_YORK, utc(2026, 3, 8, 12)) == utc(2026, 3, 9, 6, 30)


def test_new_york_business_hours_follow_the_clock_change() -> None:
    w = window({"days": WEEKDAYS, "start": "09:00", "end": "20:00"})
    # Friday 2026-03-06 in EST (14:00Z), Monday 2026-03-09 in EDT (13:00Z).
    assert next_opening(w, NEW_YORK, utc(2026, 3, 6, 2)) == utc(2026, 3, 6, 14)
    assert_opening(w, NEW_YORK, utc(2026, 3, 7, 1), utc(2026, 3, 9, 13), utc(2026, 3, 10, 0))
    # Friday 2026-10-30 in EDT, Monday 2026-11-02 in EST.
    assert next_opening(w, NEW_YORK, utc(2026, 10, 30, 2)) == utc(2026, 10, 30, 13)
    assert_opening(w, NEW_YORK, utc(2026, 10, 31, 1), utc(2026, 11, 2, 14), utc(2026, 11, 3, 1))


def test_new_york_fall_back_a_repeated_hour_is_inside_both_times() -> None:
    w = window({"start": "00:00", "end": "01:30"})
    # 2026-11-01: 00:00 EDT is 04:00Z; 01:30 EDT is 05:30Z; at 06:00Z (02:00 EDT) clocks go back
    # to 01:00 EST, so wall times 01:00-01:30 come again until 06:30Z.
    assert_opening(w, NEW_YORK, utc(2026, 11, 1, 3), utc(2026, 11, 1, 4), utc(2026, 11, 1, 5, 30))
    assert_opening(w, NEW_YORK, utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 30))


def test_a_window_across_midnight_across_a_us_clock_change() -> None:
    w = window({"days": ["sat"], "start": "22:00", "end": "06:00"})
    # Opened Saturday 2026-03-07 22:00 EST (03:00Z), closes Sunday 06:00 EDT (10:00Z): 7 hours.
    assert_opening(w, NEW_YORK, utc(2026, 3, 7, 12), utc(2026, 3, 8, 3), utc(2026, 3, 8, 10))
    # Opened Saturday 2026-10-31 22:00 EDT (02:00Z), closes Sunday 06:00 EST (11:00Z): 9 hours.
    assert_opening(w, NEW_YORK, utc(2026, 10, 31, 12), utc(2026, 11, 1, 2), utc(2026, 11, 1, 11))
    # The Sunday itself is not listed: nothing opens on it.
    assert next_opening(w, NEW_YORK, utc(2026, 11, 1, 11)) == utc(2026, 11, 8, 3)


def test_london_clock_changes() -> None:
    # 2026-03-29 01:00 GMT jumps to 02:00 BST (at 01:00Z); 2026-10-25 02:00 BST back to 01:00 GMT.
    across_midnight = window({"start": "23:00", "end": "03:00"})
    assert_opening(across_midnight, LONDON, utc(2026, 3, 28, 12), utc(2026, 3, 28, 23), utc(2026, 3, 29, 2))
    assert_opening(across_midnight, LONDON, utc(2026, 10, 24, 12), utc(2026, 10, 24, 22), utc(2026, 10, 25, 3))
    in_the_gap = window({"start": "01:30", "end": "04:00"})
    assert_opening(in_the_gap, LONDON, utc(2026, 3, 29), utc(2026, 3, 29, 1), utc(2026, 3, 29, 3))
    office = window({"days": WEEKDAYS, "start": "09:00", "end": "17:00"})
    assert next_opening(office, LONDON, utc(2026, 3, 27)) == utc(2026, 3, 27, 9)
    assert next_opening(office, LONDON, utc(2026, 3, 28)) == utc(2026, 3, 30, 8)


def test_lord_howe_half_hour_daylight_saving() -> None:
    # Lord Howe: UTC+11 in summer, UTC+10:30 in winter. 2026-04-05 02:00 (+11) goes back to 01:30
    # (+10:30) at 15:00Z on the 4th; 2026-10-04 02:00 (+10:30) jumps to 02:30 (+11) at 15:30Z on the 3rd.
    repeated = window({"start": "01:00", "end": "01:45"})
    # 01:00 +11 is 14:00Z, 01:45 +11 is 14:45Z; then 01:30-01:45 again in +10:30: 15:00Z-15:15Z.
    assert_opening(repeated, LORD_HOWE, utc(2026, 4, 4, 13), utc(2026, 4, 4, 14), utc(2026, 4, 4, 14, 45))
    assert_opening(repeated, LORD_HOWE, utc(2026, 4, 4, 14, 50), utc(2026, 4, 4, 15), utc(2026, 4, 4, 15, 15))
    # The next night, in +10:30 throughout: 01:00 is 14:30Z.
    assert next_opening(repeated, LORD_HOWE, utc(2026, 4, 4, 16)) == utc(2026, 4, 5, 14, 30)
    in_the_gap = window({"start": "02:10", "end": "06:00"})
    # 02:10 never happens on 2026-10-04: opens at 02:30 +11 (15:30Z), closes 06:00 +11 (19:00Z).
    assert_opening(in_the_gap, LORD_HOWE, utc(2026, 10, 3, 12), utc(2026, 10, 3, 15, 30), utc(2026, 10, 3, 19))
    daytime = window({"start": "09:00", "end": "20:00"})
    # In June (+10:30) 09:00 is 22:30Z the day before.
    assert_opening(daytime, LORD_HOWE, utc(2026, 6, 1, 12), utc(2026, 6, 1, 22, 30), utc(2026, 6, 2, 9, 30))


# --- excluded dates ------------------------------------------------------------------------


def test_an_excluded_date_opens_no_window() -> None:
    w = window({"days": WEEKDAYS, "start": "09:00", "end": "20:00", "exclude_dates": ["2026-12-25"]})
    # Friday 2026-12-25 is skipped, then the weekend: Monday 2026-12-28 09:00 EST.
    assert next_opening(w, NEW_YORK, utc(2026, 12, 24, 12)) == utc(2026, 12, 24, 14)
    assert next_opening(w, NEW_YORK, utc(2026, 12, 25, 1)) == utc(2026, 12, 28, 14)


def test_a_window_opened_the_evening_before_an_excluded_date_runs_past_midnight() -> None:
    w = window({"start": "22:00", "end": "02:00", "exclude_dates": ["2026-12-25"]})
    assert is_open(w, LONDON, utc(2026, 12, 25, 1))
    assert closes_at(w, LONDON, utc(2026, 12, 25, 1)) == utc(2026, 12, 25, 2)
    assert next_opening(w, LONDON, utc(2026, 12, 25, 2)) == utc(2026, 12, 26, 22)


def test_a_holiday_is_each_zones_own_local_date() -> None:
    w = window({"start": "00:00", "end": "24:00", "exclude_dates": ["2026-07-04"]})
    zones = ("Asia/Kolkata", "America/Los_Angeles")
    # 2026-07-04 in Kolkata (UTC+5:30) is 07-03 18:30Z to 07-04 18:30Z; in Los Angeles (PDT, UTC-7)
    # 07-04 07:00Z to 07-05 07:00Z. Closed while it is the 4th in either zone.
    assert closes_at(w, zones, utc(2026, 7, 3, 12)) == utc(2026, 7, 3, 18, 30)
    assert next_opening(w, zones, utc(2026, 7, 3, 18, 30)) == utc(2026, 7, 5, 7)
    assert next_opening(w, KOLKATA, utc(2026, 7, 3, 18, 30)) == utc(2026, 7, 4, 18, 30)


def test_a_window_whose_every_opening_day_is_excluded_never_opens() -> None:
    mondays = [(datetime(2026, 1, 5) + timedelta(weeks=n)).date().isoformat() for n in range(60)]
    w = window({"days": ["mon"], "start": "09:00", "end": "17:00", "exclude_dates": mondays})
    assert next_opening(w, LONDON, utc(2026, 1, 1)) is None
    assert push_into_window(utc(2026, 1, 1), w, LONDON) is None


# --- several zones: the window must hold in all of them --------------------------------------


def test_new_york_and_los_angeles_overlap() -> None:
    w = window({"start": "09:00", "end": "20:00"})
    # In January New York is open 14:00Z-01:00Z and Los Angeles 17:00Z-04:00Z: both 17:00Z-01:00Z.
    assert_opening(w, NEW_YORK + LOS_ANGELES, utc(2026, 1, 5, 12), utc(2026, 1, 5, 17), utc(2026, 1, 6, 1))


def test_a_lunch_break_in_two_zones() -> None:
    w = window([{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "20:00"}])
    zones = ("America/New_York", "America/Chicago")
    # In New York time (EST): New York 09-12, 13-20; Chicago 10-13, 14-21. Both: 10-12 and 14-20.
    assert_opening(w, zones, utc(2026, 1, 5, 12), utc(2026, 1, 5, 15), utc(2026, 1, 5, 17))
    assert_opening(w, zones, utc(2026, 1, 5, 17), utc(2026, 1, 5, 19), utc(2026, 1, 6, 1))


def test_a_multi_zone_number_gets_every_zone_of_its_prefix() -> None:
    assert zones_for_number("+61412345678") == (
        "Australia/Adelaide",
        "Australia/Brisbane",
        "Australia/Eucla",
        "Australia/Lord_Howe",
        "Australia/Perth",
        "Australia/Sydney",
        "Indian/Christmas",
        "Indian/Cocos",
    )
    us_toll_free = zones_for_number("+18005550100")
    assert len(us_toll_free) == 42
    assert {"Pacific/Guam", "Pacific/Pago_Pago", "America/St_Johns", "America/New_York"} <= set(us_toll_free)


def test_single_zone_numbers() -> None:
    assert zones_for_number("+12125550100") == ("America/New_York",)
    assert zones_for_number("+14155550100") == ("America/Los_Angeles",)
    assert zones_for_number("+442079460000") == ("Europe/London",)
    assert zones_for_number("+919876543210") == ("Asia/Calcutta",)  # phonenumbers' name for Asia/Kolkata


def test_a_number_without_a_zone_gets_its_countrys_zones_or_utc() -> None:
    # 07700 900xxx is reserved for drama in the UK: phonenumbers places it in no zone.
    assert zones_for_number("+447700900123") == (
        "Europe/Guernsey",
        "Europe/Isle_of_Man",
        "Europe/Jersey",
        "Europe/London",
    )
    assert len(zones_for_number("+15555550100")) == 42  # 555 numbers: the whole North American plan
    assert zones_for_number("+80012345678") == ("UTC",)  # international freephone: no country
    assert zones_for_number("not a number") == ("UTC",)


def test_an_australian_mobile_is_called_when_every_australian_zone_is_in_its_window() -> None:
    w = window({"start": "09:00", "end": "20:00"})
    zones = zones_for_number("+61412345678")
    # June (no daylight saving): the last to reach 09:00 is Cocos (UTC+6:30) at 02:30Z, the
    # first to reach 20:00 is Lord Howe (UTC+10:30) at 09:30Z.
    assert_opening(w, zones, utc(2026, 6, 1), utc(2026, 6, 1, 2, 30), utc(2026, 6, 1, 9, 30))
    # January: Sydney and Lord Howe are both UTC+11 and reach 20:00 at 09:00Z.
    assert_opening(w, zones, utc(2026, 1, 5), utc(2026, 1, 5, 2, 30), utc(2026, 1, 5, 9))


def test_a_us_toll_free_number_spans_guam_to_newfoundland() -> None:
    w = window({"start": "09:00", "end": "20:00"})
    zones = zones_for_number("+18005550100")
    # January: Guam (UTC+10) reaches 09:00 at 23:00Z, St John's (UTC-3:30) 20:00 at 23:30Z.
    assert_opening(w, zones, utc(2026, 1, 5, 12), utc(2026, 1, 5, 23), utc(2026, 1, 5, 23, 30))
    # Under daylight saving (St John's UTC-2:30 from 2026-03-08) the zones never overlap; they
    # do again once St John's and Halifax fall back on 2026-11-01.
    assert next_opening(w, zones, utc(2026, 4, 1)) == utc(2026, 11, 1, 23)


def test_zones_that_never_overlap_never_open() -> None:
    w = window({"start": "09:00", "end": "12:00"})
    # Guam (UTC+10) and Pago Pago (UTC-11) are 21 hours apart: their mornings never meet.
    assert next_opening(w, ("Pacific/Guam", "Pacific/Pago_Pago"), utc(2026, 1, 5)) is None
    assert next_opening(w, zones_for_number("+18005550100"), utc(2026, 1, 5)) is None


def test_a_listed_day_is_each_zones_own_local_day() -> None:
    w = window({"days": ["mon"], "start": "00:00", "end": "24:00"})
    zones = ("Asia/Kolkata", "America/Los_Angeles")
    # Monday 2026-01-05 in Kolkata (UTC+5:30): 01-04 18:30Z to 01-05 18:30Z; in Los Angeles (PST,
    # UTC-8): 01-05 08:00Z to 01-06 08:00Z. Monday in both: 08:00Z to 18:30Z.
    assert_opening(w, zones, utc(2026, 1, 4), utc(2026, 1, 5, 8), utc(2026, 1, 5, 18, 30))


def test_a_span_excludes_only_its_own_dates() -> None:
    w = window(
        [
            {"start": "09:00", "end": "12:00", "exclude_dates": ["2026-12-24"]},
            {"start": "14:00", "end": "17:00"},
        ]
    )
    # London, 2026-12-24 (UTC): the morning span is excluded, the afternoon one is not.
    assert next_opening(w, LONDON, utc(2026, 12, 24)) == utc(2026, 12, 24, 14)
    assert next_opening(w, LONDON, utc(2026, 12, 24, 17)) == utc(2026, 12, 25, 9)


# --- retries -------------------------------------------------------------------------------


def test_a_retry_due_outside_the_window_is_pushed_to_the_next_opening() -> None:
    w = window({"days": WEEKDAYS, "start": "09:00", "end": "20:00"})
    # Due Saturday 2026-01-03 10:00 EST: dialed Monday 2026-01-05 09:00 EST.
    assert push_into_window(utc(2026, 1, 3, 15), w, NEW_YORK) == utc(2026, 1, 5, 14)
    # Due Monday 20:30 EST: Tuesday 09:00.
    assert push_into_window(utc(2026, 1, 6, 1, 30), w, NEW_YORK) == utc(2026, 1, 6, 14)
    due_inside = datetime(2026, 1, 5, 16, 0, 30, 250_000, tzinfo=UTC)
    assert push_into_window(due_inside, w, NEW_YORK) == due_inside


def test_a_retry_for_a_multi_zone_number_waits_for_every_zone() -> None:
    w = window({"start": "09:00", "end": "20:00"})
    # 14:00Z on 2026-06-01 is 10:00 in New York (EDT) but 07:00 in Los Angeles (PDT): both at 16:00Z.
    assert push_into_window(utc(2026, 6, 1, 14), w, NEW_YORK + LOS_ANGELES) == utc(2026, 6, 1, 16)
    # 00:10Z is past 20:00 in New York (00:00Z): the next day's 16:00Z.
    assert push_into_window(utc(2026, 6, 2, 0, 10), w, NEW_YORK + LOS_ANGELES) == utc(2026, 6, 2, 16)


# --- the clock -----------------------------------------------------------------------------


def test_an_offset_clock_is_the_system_time_moved() -> None:
    day = timedelta(days=1)
    before = SystemClock().now()
    moved = OffsetClock(offset_seconds=day.total_seconds()).now()
    after = SystemClock().now()
    assert before + day <= moved <= after + day
    assert moved.utcoffset() == timedelta(0)
    assert OffsetClock(-3600).now() < SystemClock().now()


# --- the boundary search agrees with the definition ------------------------------------------

GRID = timedelta(minutes=15)
# Offsets and clock changes of these zones all fall on quarter hours, so with quarter-hour times
# every opening and closing lies on a quarter-hour grid that a plain scan with is_open can check.
GRID_ZONES = [*NEW_YORK, *LOS_ANGELES, *LONDON, *KOLKATA, *LORD_HOWE, "Australia/Eucla", "America/St_Johns"]
# The eves of the clock changes of 2026 in those zones.
GRID_STARTS = [
    utc(2026, 3, 7),
    utc(2026, 10, 31),
    utc(2026, 3, 28),
    utc(2026, 10, 24),
    utc(2026, 4, 4),
    utc(2026, 10, 3),
]


def _random_span(rng: random.Random) -> dict[str, Any]:
    start, end = rng.sample(range(0, 24 * 60 + 1, 15), 2)
    start, end = (end, start) if start == 24 * 60 else (start, end)
    span: dict[str, Any] = {"start": f"{start // 60:02d}:{start % 60:02d}", "end": f"{end // 60:02d}:{end % 60:02d}"}
    if rng.random() < 0.5:
        span["days"] = rng.sample(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], rng.randint(1, 6))
    if rng.random() < 0.3:
        span["exclude_dates"] = [
            f"2026-{rng.choice(['03', '04', '10', '11'])}-{rng.randint(1, 28):02d}" for _ in range(3)
        ]
        span["exclude_dates"] = sorted(set(span["exclude_dates"]))
    return span


@pytest.mark.parametrize("seed", range(60))
def test_next_opening_and_closes_at_agree_with_is_open_on_a_quarter_hour_grid(seed: int) -> None:
    rng = random.Random(seed)
    w = window([_random_span(rng) for _ in range(rng.randint(1, 3))])
    zones = tuple(rng.sample(GRID_ZONES, rng.randint(1, 3)))
    at = rng.choice(GRID_STARTS) + GRID * rng.randrange(4 * 48)
    grid = [at + GRID * step for step in range(4 * 24 * 4)]
    first_open = next((t for t in grid if is_open(w, zones, t)), None)
    opening = next_opening(w, zones, at)
    if first_open is None:
        assert opening is None or opening > grid[-1]
        return
    assert opening == first_open
    first_closed = next((t for t in grid if t > opening and not is_open(w, zones, t)), None)
    closing = closes_at(w, zones, opening)
    if first_closed is None:
        assert closing is None or closing > grid[-1]
    else:
        assert closing == first_closed
