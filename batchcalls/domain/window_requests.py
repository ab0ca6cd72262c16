"""The calling windows a batch request asks for: the batch's, and each call's own.

Pure. Problems are named by the request's paths (`calling_window.start`,
`calls[3].calling_window[1].days[0]`), every one of them in one `InvalidRequest`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from batchcalls.domain.call_windows import NO_OFFSET, for_call
from batchcalls.domain.errors import InvalidRequest
from batchcalls.domain.models import NewBatch
from batchcalls.domain.window_spec import CallingWindow, calling_window_problems, parse_calling_window
from batchcalls.domain.windows import HORIZON

FIELD = "calling_window"


def _joined(prefix: str, path: str) -> str:
    return prefix + (path if path.startswith("[") or not path else "." + path)


def requested_windows(
    data: Mapping[str, Any], calls: Sequence[Mapping[str, Any]]
) -> tuple[CallingWindow | None, list[CallingWindow | None]]:
    """The batch's window and each call's own (None where not given)."""
    problems: dict[str, list[str]] = {}
    given = [(FIELD, data[FIELD])] if FIELD in data else []
    given += [(f"calls[{i}].{FIELD}", call[FIELD]) for i, call in enumerate(calls) if FIELD in call]
    for prefix, window in given:
        for path, messages in calling_window_problems(window).items():
            problems[_joined(prefix, path)] = messages
    if problems:
        first, messages = next(iter(problems.items()))
        raise InvalidRequest(f"invalid calling window: {first}: {messages[0]}", problems)
    batch = parse_calling_window(data[FIELD]) if FIELD in data else None
    own = [parse_calling_window(call[FIELD]) if FIELD in call else None for call in calls]
    return batch, own


def openings(batch: NewBatch, now: datetime, offset: timedelta = NO_OFFSET) -> list[datetime | None]:
    """When each call's calling window opens after `now` (None: open now, no window, or a skipped
    call): the calls outside their windows are stored `scheduled` until then. One opening is worked out per
    window and set of zones, not per call. Raises InvalidRequest naming the calls whose window
    never opens for their number (`calls[i].calling_window`, or `calling_window` for the batch's)."""
    if batch.calling_window is None and all(call.calling_window is None for call in batch.calls):
        return []
    found: dict[tuple[int, tuple[str, ...]], datetime | None] = {}
    result: list[datetime | None] = []
    never: dict[str, list[str]] = {}
    for index, call in enumerate(batch.calls):
        window = None if call.skipped is not None else for_call(batch.window_of(call), call.phone_number, offset)
        if window is None:
            result.append(None)
            continue
        key = (id(window.window), window.zones)
        if key not in found:
            found[key] = window.opening(now)
        opening = found[key]
        if opening is None:
            field = f"calls[{index}].{FIELD}" if call.calling_window is not None else f"calls[{index}].phone_number"
            never[field] = [f"its calling window never opens in {window.where()} within {HORIZON.days} days"]
        result.append(opening if opening is not None and opening > now else None)
    if never:
        first, messages = next(iter(never.items()))
        raise InvalidRequest(f"calling window: {first}: {messages[0]}", never)
    return result
