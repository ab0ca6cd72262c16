"""Clean lists: a batch's phone numbers judged as a list. Pure: no I/O.

- `invalid_numbers`: `"reject"` (the default) refuses a batch holding a number that is not valid
  (`InvalidPhoneNumber`) or that the tenant's destination rules forbid (`DestinationNotAllowed`),
  naming each `calls[i].phone_number`; `"skip"` keeps the batch and marks each such call with a
  `Skip`: it is stored final with the outcome its `lifecycle` trigger gives (`invalid_number`,
  `destination_not_allowed`), never dialed. A list whose every call would be skipped is refused
  as `"reject"` refuses it: there is nothing to call, and the list is more likely wrong.
- `dedupe` (default true): a number given again, once in E.164 form, is refused
  (`DuplicatePhoneNumber`), naming the repeat and the call it repeats. Only the numbers to dial
  are compared (a skipped call dials nothing). A streamed list (a CSV) finds repeats across its
  parts with `Repeats`.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchcalls.domain.destinations import DestinationPolicy
from batchcalls.domain.errors import (
    DestinationNotAllowed,
    Details,
    DuplicatePhoneNumber,
    InvalidPhoneNumber,
    InvalidRequest,
    summary,
)
from batchcalls.domain.lifecycle import CALL_MOVES, Trigger
from batchcalls.domain.phone_numbers import e164, parse_valid, phone_problem
from batchcalls.domain.states import CallStatus, Outcome, final_status

REJECT, SKIP = "reject", "skip"
INVALID_NUMBERS = (REJECT, SKIP)  # the values of `invalid_numbers`
DEDUPE_HINT = 'send "dedupe": false to call a number more than once'
MAX_LISTED = 1000  # skipped calls listed in a submit's answer (all of them are counted)

SKIP_TRIGGERS = (Trigger.INVALID_NUMBER, Trigger.DESTINATION_NOT_ALLOWED)
# What a skipped call ends with, by the state machine's table: a call is skipped at submit.
SKIPPED_OUTCOMES = frozenset(Outcome(CALL_MOVES[(CallStatus.QUEUED, trigger)]) for trigger in SKIP_TRIGGERS)
SKIPPED_STATUSES = frozenset(final_status(outcome) for outcome in SKIPPED_OUTCOMES)


@dataclass(frozen=True)
class Skip:
    """Why a call is not dialed (`invalid_numbers: skip`): the trigger that ends it at submit,
    and the error a `"reject"` would have given, field and message (`calls[3].phone_number`,
    `is not a valid phone number`)."""

    trigger: Trigger
    field: str
    message: str

    @property
    def error(self) -> str:
        """The call's `last_error`: `<field>: <message>` (`Skip.of_error` reads it back)."""
        return f"{self.field}: {self.message}"

    @staticmethod
    def of_error(error: str) -> tuple[str, str]:
        """(field, message) of a skipped call's `last_error`."""
        field, _, message = error.partition(": ")
        return field, message


def _refusal(skips: Sequence[Skip], why: str = "") -> InvalidRequest:
    """The error `"reject"` gives for these calls: the invalid numbers, else the forbidden ones."""
    invalid = {s.field: [s.message] for s in skips if s.trigger is Trigger.INVALID_NUMBER}
    if invalid:
        return InvalidPhoneNumber(summary("invalid phone number", invalid) + why, invalid)
    blocked = {s.field: [s.message] for s in skips}
    return DestinationNotAllowed(summary("destination not allowed", blocked) + why, blocked)


def nothing_to_call(skips: Sequence[Skip]) -> InvalidRequest:
    """The refusal of a list whose every call was skipped (`skips`: all of them, or the first
    ones): the error `"reject"` would give, saying why skipping did not help."""
    return _refusal(skips, f'; with "invalid_numbers": "{SKIP}" at least one number must be valid')


def checked_numbers(
    calls: Sequence[Mapping[str, Any]], destinations: DestinationPolicy, invalid_numbers: str
) -> tuple[list[str], dict[int, Skip]]:
    """Each call's number (E.164; a skipped invalid one as given, stripped) and, by index, the
    skipped calls. With `"reject"`, raises `InvalidPhoneNumber`, then `DestinationNotAllowed`,
    naming every such call instead."""
    numbers: list[str] = []
    skipped: dict[int, Skip] = {}
    for index, call in enumerate(calls):
        raw = call["phone_number"]
        parsed = parse_valid(raw)
        if parsed is None:
            skipped[index] = Skip(Trigger.INVALID_NUMBER, f"calls[{index}].phone_number", phone_problem(raw))
            numbers.append(raw.strip())
            continue
        number, region, national = parsed
        problem = destinations.problem(number, region, national)
        if problem is not None:
            skipped[index] = Skip(Trigger.DESTINATION_NOT_ALLOWED, f"calls[{index}].phone_number", problem)
        numbers.append(e164(number, national))
    if skipped and invalid_numbers != SKIP:
        raise _refusal(list(skipped.values()))
    return numbers, skipped


def refuse_repeats(numbers: Sequence[str], skipped: Mapping[int, Skip]) -> None:
    """Raise `DuplicatePhoneNumber` naming each call whose number an earlier call to be dialed
    has: `calls[7].phone_number: repeats calls[2].phone_number (+442079460000)`."""
    first: dict[str, int] = {}
    repeats: Details = {}
    for index, number in enumerate(numbers):
        if skipped and index in skipped:
            continue
        earlier = first.setdefault(number, index)
        if earlier != index:
            repeats[f"calls[{index}].phone_number"] = [f"repeats calls[{earlier}].phone_number ({number})"]
    if repeats:
        raise DuplicatePhoneNumber(f"{summary('duplicate phone number', repeats)}; {DEDUPE_HINT}", repeats)


def skipped_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A skipped call (its stored row) as a submit's answer lists it: its index in the batch, its
    id and number, and the error `"reject"` would have given (field and message)."""
    field, message = Skip.of_error(row["last_error"] or "")
    return {
        "index": row["seq"],
        "call_id": row["id"],
        "phone_number": row["phone_number"],
        "field": field,
        "message": message,
    }


class Repeats:
    """The numbers of a list streamed in parts, to find one given again. Each is kept as an
    integer (its E.164 digits) in a set, and in arrival order with its place (a CSV line) in two
    arrays, where an earlier one's place is looked up: about 80 bytes a number (80 MB for a
    million), a third of what a dict of the strings takes."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._order: array[int] = array("q")
        self._places: array[int] = array("q")

    def first_place(self, number: str, place: int) -> int | None:
        """The place where `number` (E.164) was seen before, or None (then it is remembered at `place`)."""
        key = int(number[1:])
        if key in self._seen:
            return self._places[self._index(key)]
        self._seen.add(key)
        self._order.append(key)
        self._places.append(place)
        return None

    def _index(self, key: int) -> int:
        # A search of the arrays' bytes: `array.index` makes an int of each item it passes, 50 ms
        # for a million, and a refused upload may look up a hundred repeats.
        data, pattern = self._order.tobytes(), array("q", [key]).tobytes()
        at = data.find(pattern)
        while at % len(pattern):  # a match across two items
            at = data.find(pattern, at + 1)
        return at // len(pattern)
