"""A call's calling window where its callee is, on the service's clock: when it may be dialed.

Pure. A call's window is its own `calling_window`, else its batch's (stored in the normal form
of `window_spec.to_json`); with `"recipient"` spans it holds in every zone of the number called.
`offset` moves the clock the window is read on (`BATCHCALLS_CLOCK_OFFSET_SECONDS`): an instant
`t` is read as `t + offset`, so a test can run a window at another hour without waiting for it;
instants in and out are real ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from batchcalls.domain.window_spec import RECIPIENT, CallingWindow, parse_calling_window
from batchcalls.domain.windows import next_opening, zones_for_number

NO_OFFSET = timedelta(0)


@dataclass(frozen=True)
class CallWindow:
    window: CallingWindow
    zones: tuple[str, ...]  # the callee's zones (empty when no span reads them)
    offset: timedelta = NO_OFFSET

    def opening(self, at: datetime) -> datetime | None:
        """The first instant at or after `at` at which the call may be dialed (`at` itself when the
        window is open); None when it never opens within `windows.HORIZON`."""
        found = next_opening(self.window, self.zones, at + self.offset)
        return None if found is None else found - self.offset

    def where(self) -> str:
        """The callee's zones as an error message names them."""
        if not self.zones:
            return "its own time zone"
        return ", ".join(self.zones) if len(self.zones) <= 3 else f"all {len(self.zones)} time zones of the number"


def reads_recipient(window: CallingWindow) -> bool:
    return any(span.timezone == RECIPIENT for span in window.spans)


@lru_cache(maxsize=256)
def _parsed(stored: str) -> CallingWindow:
    return parse_calling_window(json.loads(stored))


def stored_window(stored: object) -> CallingWindow | None:
    """A window as the store holds it (normal form, or None: no window)."""
    if stored is None:
        return None
    return _parsed(json.dumps(stored, sort_keys=True))


def for_call(window: CallingWindow | None, phone_number: str, offset: timedelta = NO_OFFSET) -> CallWindow | None:
    """The window of a call to `phone_number` (E.164), or None when the call has none."""
    if window is None:
        return None
    return CallWindow(window, zones_for_number(phone_number) if reads_recipient(window) else (), offset)
