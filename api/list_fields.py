"""The fields of a batch's list options, `dedupe` and `invalid_numbers`, with their docs (what they
mean is `batchcalls.domain.call_lists`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import fields, validate

from batchcalls.domain.call_lists import INVALID_NUMBERS

DEDUPE_DOC = (
    "Default true: a phone number given twice (compared in E.164 form, among the calls to dial) is a 422"
    " `duplicate_phone_number` naming the repeat and the call it repeats"
    " (`calls[7].phone_number`: `repeats calls[2].phone_number (+442079460000)`). False: each is dialed."
)
INVALID_NUMBERS_DOC = (
    "`reject` (default): an invalid number is a 422 `invalid_phone_number`, a forbidden destination a 422"
    " `destination_not_allowed`, naming each `calls[i].phone_number`. `skip`: the other calls are accepted;"
    " each such call is stored `failed` with outcome `invalid_number` (or `destination_not_allowed`), no"
    " attempt, its `last_error` the 422's entry, counted in `failed_calls`; the 202 says `skipped_calls`"
    " and lists them in `skipped`. A batch whose every call would be skipped is refused as `reject` refuses it."
)


class StrictBoolean(fields.Boolean):
    """true or false, and nothing else (marshmallow's Boolean also takes "yes", 1 and more)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> bool:
        if type(value) is not bool:
            raise self.make_error("invalid", input=value)
        return value


def dedupe_field() -> fields.Field[Any]:
    return StrictBoolean(metadata={"description": DEDUPE_DOC, "example": True})


def invalid_numbers_field() -> fields.Field[Any]:
    return fields.String(
        validate=validate.OneOf(INVALID_NUMBERS), metadata={"description": INVALID_NUMBERS_DOC, "example": "skip"}
    )
