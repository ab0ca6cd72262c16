"""A call of a `POST /v1/batches` body as the published OpenAPI document shows it.

Documentation only: `api.schemas.CallList` checks calls with a loop (see there), and these schemas
say what that loop and `batchcalls.domain.scripts` accept; tests/unit/test_openapi.py keeps their field
names equal to CALL_FIELDS, SCRIPT_FIELDS and STEP_KINDS.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.schemas import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, MAX_PRIORITY, MIN_PRIORITY, _doc
from api.voicemail_doc import VOICEMAIL_DOC
from api.window_doc import CALLING_WINDOW_DOC
from batchcalls.domain.scripts import MAX_SCRIPT_TYPE_CHARS, MAX_STEPS, MAX_TEXT_CHARS
from batchcalls.domain.templates import MAX_NAME_CHARS, MAX_VALUE_CHARS, MAX_VARIABLES

# Text spoken by a step: what `batchcalls.domain.scripts` accepts.
_SPOKEN = [validate.Length(min=1, max=MAX_TEXT_CHARS), validate.Regexp(r"\S")]


class TextStepSchema(Schema):
    """A step spoken to the callee."""

    type = fields.String(validate=validate.OneOf(["text"]), metadata=_doc("`text` (the default)."))
    text = fields.String(
        required=True,
        validate=_SPOKEN,
        metadata=_doc("Not blank.", example="Hello, I'm calling about our new product."),
    )


class InputStepSchema(Schema):
    """A step capturing DTMF digits and/or speech, stored in the call's `responses`."""

    type = fields.String(required=True, validate=validate.OneOf(["input"]))
    dtmf = fields.Raw(
        metadata=_doc(
            "`true` or options `{max_digits: 1..20, timeout: 0..10, submit_on_hash: bool}`; dtmf, speech or both.",
            example={"max_digits": 1},
        )
    )
    speech = fields.Raw(
        metadata=_doc(
            "`true` or options `{language: BCP-47, context: [hints], end_on_silence: 0.4..10,"
            " start_timeout: 1..60, max_duration: 1..60}`.",
            example=True,
        )
    )
    name = fields.String(metadata=_doc("1 to 64 characters naming the responses of this step.", example="menu"))
    opt_out = fields.Dict(
        metadata=_doc(
            '`{digits: "9", phrases: ["stop calling"]}` (either or both; digits need `dtmf`, at most its'
            " `max_digits` keys of 0-9 * #; phrases need `speech`, 1 to 20 of 1 to 100 characters). A callee who"
            " presses the digits, or says a phrase (its words together, any case), is added to the tenant's"
            " suppression list at once, the call ends with outcome `opted_out` and is never retried.",
            example={"digits": "9"},
        )
    )


class AgentStepSchema(Schema):
    """The call handed to a live AI voice agent over a WebSocket."""

    type = fields.String(required=True, validate=validate.OneOf(["agent"]))
    url = fields.String(
        required=True,
        metadata=_doc("ws:// or wss:// URL, at most 2,048 characters.", example="wss://agent.example.com/voice"),
    )
    headers = fields.Dict(
        keys=fields.String(),
        metadata=_doc("At most 50 names with string, number or boolean values sent when connecting."),
    )


class ScriptSchema(Schema):
    """Either `text` (one spoken step) or `steps`, not both. A missing, empty or too long script,
    an unknown step type or field is a 422 `invalid_script`."""

    type = fields.String(
        validate=validate.Length(max=MAX_SCRIPT_TYPE_CHARS),
        metadata=_doc("A label of the script, shown as the call's `script_type`.", example="sales_call"),
    )
    text = fields.String(validate=_SPOKEN, metadata=_doc("Not blank.", example="Hello, this is a test call."))
    steps = fields.List(
        fields.Dict(metadata={"one_of": [TextStepSchema, InputStepSchema, AgentStepSchema]}),
        validate=validate.Length(min=1, max=MAX_STEPS),
        metadata=_doc("Text, input or agent steps."),
    )


class CallSchema(Schema):
    """One call of a batch."""

    phone_number = fields.String(
        required=True,
        metadata=_doc(
            "International E.164 form (+ and the country code); spaces, dashes, dots and brackets are"
            " ignored. Not a valid number: 422 `invalid_phone_number`.",
            example="+14155552671",
        ),
    )
    script = fields.Nested(ScriptSchema, required=True)
    voice_id = fields.String(
        metadata=_doc("A voice of the catalog; unknown: 422 `invalid_script`.", example="voice_female_1")
    )
    priority = fields.Integer(
        strict=True,
        validate=validate.Range(min=MIN_PRIORITY, max=MAX_PRIORITY),
        metadata=_doc("0 (highest) to 9; defaults to the batch's priority."),
    )
    calling_window = fields.Raw(metadata=_doc("This call's own window, replacing its batch's. " + CALLING_WINDOW_DOC))
    voicemail = fields.Raw(metadata=_doc(VOICEMAIL_DOC))
    metadata = fields.Dict(
        keys=fields.String(),
        metadata=_doc(
            f"Any JSON object of at most {MAX_METADATA_BYTES} bytes, nested at most {MAX_METADATA_DEPTH} deep"
            " (the batch's limits), echoed as the call's `metadata` in its events, `GET .../calls` and the"
            " status body's `calls`, so results can be matched to the caller's records.",
            example={"crm_id": "c-42"},
        ),
    )
    variables = fields.Dict(
        keys=fields.String(),
        metadata=_doc(
            f"Values filled into the script's texts at submit: `{{{{name}}}}`, or `{{{{name|default}}}}` whose"
            f" default is used without the variable. At most {MAX_VARIABLES} names of letters, digits and"
            f" underscores (not starting with a digit, at most {MAX_NAME_CHARS} characters), each a string of at"
            f" most {MAX_VALUE_CHARS} characters, a number or a boolean; a bad one is a 422 `invalid_request`"
            " naming `calls[i].variables.<name>`. A placeholder with neither a value nor a default is a 422"
            " `invalid_script` naming `calls[i].script...` and the variable; a filled text is held to the limits"
            " of literal text. Plain substitution: nothing is evaluated, a value is never filled in turn, and"
            " `{{7*7}}`, `{% if %}` or `${x}` are not placeholders and are spoken as written.",
            example={"first_name": "Ada", "balance": 12.5},
        ),
    )
