from __future__ import annotations

from datetime import timedelta

import pytest

from batchcalls.domain.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, seconds=7384)),
        ("0", timedelta(0)),
        ("30", timedelta(seconds=30)),
        ("1.5h", timedelta(minutes=90)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "-1h", "24x", "1h 30m", "30m1h", "1h1h", "1e3", "abc", "99999d"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="duration|longer"):
        parse_duration(text)
