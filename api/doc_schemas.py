"""What the API answers and what it POSTs to callback URLs, as marshmallow schemas.

For the published OpenAPI document only (api/openapi.py): nothing loads or dumps with them. They
follow `batchcalls.domain.payloads` and `batchcalls.domain.events` field by field; tests/unit/test_openapi.py
validates real bodies and events against the document, so a field added there and not here fails.
Every field the API always sends is `required`; a field that may be null says `allow_none`.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from batchcalls.domain.events import CALL_EVENT_TYPES, EventType
from batchcalls.domain.states import BatchStatus, CallStatus, Outcome


def _doc(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, **extra}


def _one_of(values: Any) -> validate.OneOf:
    return validate.OneOf([v.value for v in values])


def _time(description: str, *, allow_none: bool = True) -> fields.DateTime:
    return fields.DateTime(
        required=True,
        allow_none=allow_none,
        metadata=_doc(f"{description} ISO 8601 UTC with milliseconds.", example="2026-11-23T13:43:34.123Z"),
    )


class ErrorDetailSchema(Schema):
    code = fields.String(
        required=True,
        metadata=_doc(
            "Stable machine-readable code; see each response for the codes it carries.", example="invalid_phone_number"
        ),
    )
    message = fields.String(
        required=True,
        metadata=_doc(
            "What went wrong, for people.",
            example="invalid phone number: calls[0].phone_number: is not a valid phone number",
        ),
    )
    details = fields.Dict(
        required=True,
        allow_none=True,
        metadata=_doc(
            "Per field, its problems (`calls[3].phone_number`, `retry_config.delay`); for `quota_exceeded` the"
            " quota's figures (`quota`, `limit`, `queued_calls`, `requested_calls`); or null.",
            example={"calls[0].phone_number": ["is not a valid phone number"]},
        ),
    )


class ErrorSchema(Schema):
    """Every error: `{"error": {"code", "message", "details"}}`."""

    error = fields.Nested(ErrorDetailSchema, required=True)


class AttemptSchema(Schema):
    number = fields.Integer(required=True, metadata=_doc("1 for the first attempt.", example=1))
    provider_call_id = fields.String(required=True, allow_none=True, metadata=_doc("The provider's id of the call."))
    outcome = fields.String(
        required=True, allow_none=True, validate=_one_of(Outcome), metadata=_doc("Null while the attempt lives.")
    )
    dialed_at = _time("When it was dialed.")
    answered_at = _time("When it was answered; null if never.")
    ended_at = _time("When it ended; null while it lives.")
    duration = fields.Float(required=True, allow_none=True, metadata=_doc("Seconds from answer to end."))
    voicemail_left = fields.Boolean(
        required=True,
        metadata=_doc("True when a machine answered and the call's `voicemail` message was left after its beep."),
    )


class SpeechResultSchema(Schema):
    text = fields.String(required=True)
    confidence = fields.Float(required=True, allow_none=True)


class CallResponseSchema(Schema):
    """What an `input` step captured."""

    id = fields.String(required=True, metadata=_doc("Unique per capture."))
    step = fields.Integer(required=True, metadata=_doc("Index of the input step in the script."))
    name = fields.String(required=True, allow_none=True, metadata=_doc("The step's `name`."))
    attempt = fields.Integer(required=True)
    digits = fields.String(required=True, allow_none=True)
    speech = fields.List(fields.Nested(SpeechResultSchema), required=True)
    timed_out = fields.Boolean(required=True)
    at = _time("When it was captured.", allow_none=False)


class CallSummarySchema(Schema):
    id = fields.String(required=True, metadata=_doc("The call's id.", example="call_abc123"))
    status = fields.String(required=True, validate=_one_of(CallStatus))
    phone_number = fields.String(required=True, metadata=_doc("E.164.", example="+14155552671"))
    metadata = fields.Dict(required=True, allow_none=True, metadata=_doc("The call's own `metadata`; null without."))


class CallSchema(Schema):
    """A call as `GET /v1/batches/{batch_id}/calls` and call events show it."""

    id = fields.String(required=True, metadata=_doc("The call's id.", example="call_abc123"))
    phone_number = fields.String(required=True, metadata=_doc("E.164.", example="+14155552671"))
    status = fields.String(
        required=True,
        validate=_one_of(CallStatus),
        metadata=_doc("`scheduled`: waiting for a retry; `dialing`, `ringing`, `in_progress`: live."),
    )
    outcome = fields.String(
        required=True,
        allow_none=True,
        validate=_one_of(Outcome),
        metadata=_doc("The final outcome; null until the call is final. Only `completed` means answered by a person."),
    )
    priority = fields.Integer(required=True, metadata=_doc("0 (highest) to 9."))
    voice_id = fields.String(required=True, allow_none=True)
    script_type = fields.String(required=True, allow_none=True, metadata=_doc("The script's `type`."))
    responses = fields.List(fields.Nested(CallResponseSchema), required=True)
    last_error = fields.String(required=True, allow_none=True)
    next_attempt_at = _time("When a scheduled retry is due; null otherwise.")
    attempts = fields.List(fields.Nested(AttemptSchema), required=True, metadata=_doc("Oldest first."))
    metadata = fields.Dict(
        required=True,
        allow_none=True,
        metadata=_doc(
            "The call's own `metadata` from the request, as it was sent; null without.", example={"crm_id": "c-42"}
        ),
    )


class RetryConfigViewSchema(Schema):
    """The batch's retry rules with every default filled in."""

    max_attempts = fields.Integer(required=True)
    delay = fields.Float(required=True)
    backoff_multiplier = fields.Float(required=True)
    retry_on = fields.List(fields.String(validate=_one_of(Outcome)), required=True)


class BatchSchema(Schema):
    """The status body without `calls` (`GET /v1/batches` and batch events)."""

    batch_id = fields.String(required=True, metadata=_doc("The batch's id.", example="batch_xyz789"))
    status = fields.String(required=True, validate=_one_of(BatchStatus))
    total_calls = fields.Integer(required=True)
    completed_calls = fields.Integer(required=True, metadata=_doc("Calls with outcome `completed`."))
    failed_calls = fields.Integer(required=True, metadata=_doc("Calls final with any other outcome but `cancelled`."))
    cancelled_calls = fields.Integer(required=True)
    in_progress = fields.Integer(required=True, metadata=_doc("Calls dialing, ringing or answered."))
    pending = fields.Integer(required=True, metadata=_doc("Calls queued or scheduled."))
    scheduled = fields.Integer(
        required=True, metadata=_doc("Of `pending`, the calls waiting for a retry or for their calling window.")
    )
    concurrency = fields.Integer(required=True)
    priority = fields.Integer(required=True)
    retry_config = fields.Nested(RetryConfigViewSchema, required=True)
    callback_url = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(required=True, allow_none=True, metadata=_doc("The request's `metadata`."))
    created_at = _time("When it was accepted.", allow_none=False)
    started_at = _time("When its first call was dialed; null before.")
    finished_at = _time("When its last call became final; null before.")
    expires_at = _time("Its `expires_at`, after which no call of it is placed; null when none was given.")
    start_at = _time(
        "Its `start_at`, before which none of its calls is dialed (the batch is `scheduled` until then);"
        " null when none was given."
    )
    calling_window = fields.List(
        fields.Dict(),
        required=True,
        allow_none=True,
        metadata=_doc("Its `calling_window` in normal form (a list of spans, every field given); null when none."),
    )


class BatchStatusSchema(BatchSchema):
    """The status body: the batch and its first calls."""

    calls = fields.List(
        fields.Nested(CallSummarySchema),
        required=True,
        metadata=_doc(
            "The first 100 calls in submission order (`?calls_limit=`, up to 1,000); every call: the /calls route."
        ),
    )


class SkippedCallSchema(Schema):
    """A call skipped at submit (`invalid_numbers: skip`)."""

    index = fields.Integer(required=True, metadata=_doc("Its index in the batch's calls (CSV: rows), from 0."))
    call_id = fields.String(required=True, metadata=_doc("Its id: it is stored `failed`, never dialed."))
    phone_number = fields.String(required=True, metadata=_doc("Its number: E.164 when valid, else as given."))
    field = fields.String(
        required=True,
        metadata=_doc(
            "The field a 422 would name: `calls[3].phone_number`, or `line 5, column phone_number` for a CSV."
        ),
    )
    message = fields.String(
        required=True, metadata=_doc("What is wrong with it.", example="is not a valid phone number")
    )


class BatchAcceptedSchema(BatchStatusSchema):
    """The answer to a submit: the status body and the calls skipped."""

    skipped_calls = fields.Integer(
        required=True,
        metadata=_doc(
            "How many calls were skipped (`invalid_numbers: skip`): stored `failed` with outcome `invalid_number`"
            " or `destination_not_allowed` and no attempt, counted in `failed_calls`."
        ),
    )
    skipped = fields.List(
        fields.Nested(SkippedCallSchema),
        required=True,
        metadata=_doc("The first 1,000 skipped calls in submission order; all of them: `/calls?status=failed`."),
    )


def _cursor() -> fields.String:
    return fields.String(
        required=True, allow_none=True, metadata=_doc("Pass as `?cursor=` for the next page; null on the last page.")
    )


class CallsPageSchema(Schema):
    calls = fields.List(fields.Nested(CallSchema), required=True)
    next_cursor = _cursor()


class BatchesPageSchema(Schema):
    batches = fields.List(fields.Nested(BatchSchema), required=True, metadata=_doc("Newest first."))
    next_cursor = _cursor()


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata=_doc("Each dependency (database, redis, broker): `ok` or what is wrong."),
    )


BATCH_EVENT_TYPES = [t for t in EventType if t not in CALL_EVENT_TYPES]


def _event_fields(types: list[EventType], data: type[Schema], data_doc: str) -> dict[str, fields.Field[Any]]:
    return {
        "id": fields.String(
            required=True,
            metadata=_doc(
                "Unique per event (also in `webhook-id`): deliveries are at least once, dedupe by it.",
                example="evt_5f1c2a9e0b7d4c3a8e6f1d2c",
            ),
        ),
        "type": fields.String(required=True, validate=validate.OneOf([t.value for t in types])),
        "created_at": _time("When the change it reports happened.", allow_none=False),
        "batch_id": fields.String(required=True),
        "data": fields.Nested(data, required=True, metadata=_doc(data_doc)),
    }


BatchEventSchema = Schema.from_dict(
    _event_fields(BATCH_EVENT_TYPES, BatchSchema, "The batch's status body without `calls`."), name="BatchEventSchema"
)
CallEventSchema = Schema.from_dict(
    _event_fields(sorted(CALL_EVENT_TYPES), CallSchema, "The call as `/calls` shows it."), name="CallEventSchema"
)
