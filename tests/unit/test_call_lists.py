"""Clean lists, pure: `dedupe` and `invalid_numbers` in `build_batch` (batchcalls.domain.call_lists),
the state machine's rows for a skipped call, the CSV's list rules across groups, and the request
fields' shape (api.list_fields)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.schemas import load_batch_request
from batchcalls.domain import lifecycle as lc
from batchcalls.domain.call_lists import SKIPPED_OUTCOMES, Repeats, Skip, skipped_view
from batchcalls.domain.csv_calls import CsvList
from batchcalls.domain.destinations import DestinationPolicy
from batchcalls.domain.errors import DestinationNotAllowed, DuplicatePhoneNumber, InvalidPhoneNumber, InvalidRequest
from batchcalls.domain.events import EventType
from batchcalls.domain.models import NewBatch
from batchcalls.domain.states import RETRYABLE_OUTCOMES, CallStatus, Outcome
from batchcalls.domain.validation import build_batch, build_batch_part
from batchcalls.domain.window_requests import openings

UK, US, PREMIUM = "+442079460000", "+14155552671", "+449012345678"


def calls(*numbers: str) -> list[dict[str, Any]]:
    return [{"phone_number": n, "script": {"text": "Hello."}} for n in numbers]


def build(body: dict[str, Any], destinations: DestinationPolicy | None = None) -> NewBatch:
    policy = destinations or DestinationPolicy()
    return build_batch(load_batch_request(body), max_concurrency=10, voices={}, destinations=policy)


# --- dedupe --------------------------------------------------------------------------------------


def test_a_repeat_after_normalisation_names_both_calls() -> None:
    with pytest.raises(DuplicatePhoneNumber) as raised:
        build({"calls": calls(UK, US, "+44 20 7946 0000", "+1 (415) 555-2671", UK)})
    assert raised.value.code == "duplicate_phone_number"
    assert raised.value.details == {
        "calls[2].phone_number": [f"repeats calls[0].phone_number ({UK})"],
        "calls[3].phone_number": [f"repeats calls[1].phone_number ({US})"],
        "calls[4].phone_number": [f"repeats calls[0].phone_number ({UK})"],
    }
    assert raised.value.message.startswith("duplicate phone number: calls[2].phone_number: repeats calls[0]")


def test_dedupe_false_keeps_every_repeat() -> None:
    batch = build({"calls": calls(UK, "+44 20 7946 0000", UK), "dedupe": False})
    assert [c.phone_number for c in batch.calls] == [UK, UK, UK]


def test_invalid_numbers_are_reported_before_repeats() -> None:
    with pytest.raises(InvalidPhoneNumber):
        build({"calls": calls(UK, UK, "+1 555")})


def test_dedupe_and_invalid_numbers_take_only_their_own_values() -> None:
    for field, value in (("dedupe", "true"), ("dedupe", 1), ("dedupe", None), ("invalid_numbers", "drop")):
        with pytest.raises(InvalidRequest) as raised:
            load_batch_request({"calls": calls(UK), field: value})
        assert list(raised.value.details) == [field]


# --- invalid_numbers ------------------------------------------------------------------------------


def test_reject_is_the_default_and_names_each_invalid_number() -> None:
    with pytest.raises(InvalidPhoneNumber) as raised:
        build({"calls": calls(UK, "+1 555", "4155552671")})
    assert set(raised.value.details) == {"calls[1].phone_number", "calls[2].phone_number"}
    with pytest.raises(DestinationNotAllowed):
        build({"calls": calls(UK, PREMIUM), "invalid_numbers": "reject"})


def test_skip_marks_invalid_and_forbidden_numbers_and_keeps_the_rest() -> None:
    batch = build({"calls": calls(UK, " +1 555 ", PREMIUM, US), "invalid_numbers": "skip"})
    assert [c.phone_number for c in batch.calls] == [UK, "+1 555", PREMIUM, US]  # an invalid one as given
    assert [c.skipped and c.skipped.trigger for c in batch.calls] == [
        None,
        lc.Trigger.INVALID_NUMBER,
        lc.Trigger.DESTINATION_NOT_ALLOWED,
        None,
    ]
    invalid = batch.calls[1].skipped
    assert invalid is not None and invalid.error == "calls[1].phone_number: is not a valid phone number"


def test_a_list_whose_every_call_is_skipped_is_refused_as_reject_refuses_it() -> None:
    with pytest.raises(InvalidPhoneNumber) as raised:
        build({"calls": calls("+1 555", PREMIUM), "invalid_numbers": "skip"})
    assert raised.value.details == {"calls[0].phone_number": ["is not a valid phone number"]}
    assert '"invalid_numbers": "skip" at least one number must be valid' in raised.value.message
    with pytest.raises(DestinationNotAllowed):
        build({"calls": calls(PREMIUM), "invalid_numbers": "skip"})


def test_repeats_are_compared_among_the_numbers_to_dial_only() -> None:
    batch = build({"calls": calls(UK, PREMIUM, "+1 555", PREMIUM, "+1 555"), "invalid_numbers": "skip"})
    assert sum(c.skipped is None for c in batch.calls) == 1
    with pytest.raises(DuplicatePhoneNumber) as raised:
        build({"calls": calls("+1 555", UK, UK), "invalid_numbers": "skip"})
    assert list(raised.value.details) == ["calls[2].phone_number"]


def test_a_skipped_call_has_no_calling_window_opening() -> None:
    window = {"days": ["mon"], "start": "09:00", "end": "10:00", "timezone": "recipient"}
    batch = build({"calls": calls(UK, "+1 555"), "invalid_numbers": "skip", "calling_window": window})
    assert openings(batch, datetime(2026, 11, 24, 12, 0, tzinfo=UTC))[1] is None


def test_a_part_of_a_streamed_list_leaves_repeats_and_an_all_skipped_part_to_the_streamer() -> None:
    data = load_batch_request({"calls": calls("+1 555", "+1 555"), "invalid_numbers": "skip"})
    part = build_batch_part(data, max_concurrency=10, voices={})
    assert all(c.skipped is not None for c in part.calls)
    repeated = build_batch_part(load_batch_request({"calls": calls(UK, UK)}), max_concurrency=10, voices={})
    assert len(repeated.calls) == 2


# --- the state machine -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "outcome"),
    [
        (lc.Trigger.INVALID_NUMBER, Outcome.INVALID_NUMBER),
        (lc.Trigger.DESTINATION_NOT_ALLOWED, Outcome.DESTINATION_NOT_ALLOWED),
    ],
)
def test_a_skipped_call_ends_failed_at_submit_by_the_table(trigger: lc.Trigger, outcome: Outcome) -> None:
    call, effects = lc.call_move(lc.Call(CallStatus.QUEUED, 0), trigger, None, None)
    assert call.status is CallStatus.FAILED
    assert effects[0] == lc.FinishCall(CallStatus.FAILED, outcome, None)
    assert lc.WriteEvent(EventType.CALL_FAILED, lc.Payload.CALL) in effects
    for status in set(CallStatus) - {CallStatus.QUEUED}:  # only a call not yet queued is skipped
        assert lc.call_move(lc.Call(status, 1), trigger, None, None) == (lc.Call(status, 1), ())
    assert outcome in SKIPPED_OUTCOMES and outcome not in RETRYABLE_OUTCOMES


def test_a_skipped_call_is_listed_with_the_error_reject_would_give() -> None:
    skip = Skip(lc.Trigger.INVALID_NUMBER, "line 4, column phone_number", "is not a valid phone number")
    row = {"seq": 2, "id": "call_1", "phone_number": "+1 555", "last_error": skip.error}
    assert skipped_view(row) == {
        "index": 2,
        "call_id": "call_1",
        "phone_number": "+1 555",
        "field": "line 4, column phone_number",
        "message": "is not a valid phone number",
    }


# --- a streamed list -----------------------------------------------------------------------------


def test_repeats_across_parts_name_the_first_place() -> None:
    seen = Repeats()
    assert [seen.first_place(n, line) for line, n in enumerate([UK, US, "+442079460001"], start=2)] == [None] * 3
    assert seen.first_place(US, 9) == 3
    assert seen.first_place(UK, 10) == 2


def test_an_earlier_place_is_found_whatever_the_bytes_of_its_neighbours() -> None:
    """The lookup searches the arrays' bytes: a match across two numbers' bytes is not a place."""
    first, second = 10**14, 1
    straddling = int.from_bytes((first.to_bytes(8, "little") + second.to_bytes(8, "little"))[1:9], "little")
    seen = Repeats()
    for place, key in enumerate((first, second, straddling), start=2):
        assert seen.first_place(f"+{key}", place) is None
    assert seen.first_place(f"+{straddling}", 9) == 4


def test_a_csv_list_names_skips_by_line_and_finds_repeats_across_groups() -> None:
    def part(*numbers: str) -> NewBatch:
        data = load_batch_request({"calls": calls(*numbers), "invalid_numbers": "skip"})
        return build_batch_part(data, max_concurrency=10, voices={})

    listed = CsvList(dedupe=True, keep_skips=1)
    first, repeats = listed.take(part(UK, "+1 555"), [2, 4])
    assert repeats == {}
    assert first.calls[1].skipped is not None
    assert first.calls[1].skipped.error == "line 4, column phone_number: is not a valid phone number"
    _, repeats = listed.take(part("+1 556", "+44 20 7946 0000"), [5, 6])
    assert repeats == {"line 6, column phone_number": [f"repeats line 2 ({UK})"]}
    assert listed.kept == 2 and [s.field for s in listed.skips] == ["line 4, column phone_number"]  # one kept
    undeduped = CsvList(dedupe=False, keep_skips=0)
    assert undeduped.take(part(UK, UK), [2, 3])[1] == {}
