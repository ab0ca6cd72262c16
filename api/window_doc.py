"""The published description of a `calling_window` (the batch's field and a call's)."""

CALLING_WINDOW_DOC = (
    'When calls may be dialed: `{"days": ["mon", ...], "start": "09:00", "end": "20:00", "timezone":'
    ' "recipient" | IANA name, "exclude_dates": ["2026-12-25"]}`, or a list of up to 8 such objects'
    " (their union: several windows a day). `start` after `end` crosses midnight; `recipient` (the"
    " default) reads the time where the number is, in every zone of a number whose region spans several."
    " A call outside its window waits `scheduled` with its `next_attempt_at`; a retry is pushed to the"
    " next opening. A call's own window replaces its batch's. A window that never opens for a call's"
    " number is a 422 naming the call."
)
CALLING_WINDOW_EXAMPLE = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "20:00"}
