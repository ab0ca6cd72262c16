"""The shape of a `POST /v1/batches` body: which fields exist and their JSON types.

Only shape and types are judged here (a failure is `invalid_request`); what the values mean
(phone numbers, scripts, voices, concurrency, retry rules) is judged by
`batchcalls.domain.validation.build_batch`, which takes what `load_batch_request` returns.

Unknown fields are rejected at every level, and booleans are not numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from api.body_paths import check_storable_text as check_storable_text  # the routes and tests read it here
from api.body_paths import flatten_errors
from api.call_data import MAX_METADATA_BYTES as MAX_METADATA_BYTES  # read here by the docs and tests
from api.call_data import MAX_METADATA_DEPTH as MAX_METADATA_DEPTH
from api.call_data import call_data_problems, check_metadata
from api.call_data import nesting_depth as nesting_depth
from api.list_fields import dedupe_field, invalid_numbers_field
from api.voicemail_doc import VOICEMAIL_DOC, VOICEMAIL_EXAMPLE
from api.window_doc import CALLING_WINDOW_DOC, CALLING_WINDOW_EXAMPLE
from batchcalls.domain.errors import InvalidRequest, InvalidScript
from batchcalls.domain.retry import MAX_ATTEMPTS_LIMIT, MAX_BACKOFF_MULTIPLIER, MAX_DELAY_SECONDS
from batchcalls.domain.scripts import MAX_STEPS

MIN_PRIORITY, MAX_PRIORITY = 0, 9

# marshmallow's own wording, so hand-checked fields read like the others.
UNKNOWN_FIELD = "Unknown field."
REQUIRED = "Missing data for required field."
NOT_AN_OBJECT = "Invalid input type."
NOT_A_STRING = "Not a valid string."
NOT_AN_INTEGER = "Not a valid integer."
NOT_A_LIST = "Not a valid list."
NOT_A_MAPPING = "Not a valid mapping type."
PRIORITY_RANGE = f"Must be greater than or equal to {MIN_PRIORITY} and less than or equal to {MAX_PRIORITY}."

CALL_FIELDS = frozenset(
    {"phone_number", "script", "voice_id", "priority", "calling_window", "metadata", "variables", "voicemail"}
)
SCRIPT_FIELDS = frozenset({"type", "text", "steps"})

Problems = dict[str, Any]  # marshmallow's nested error messages: field or index -> messages


def _priority_problem(value: object) -> str | None:
    # type() rather than isinstance(): True and False are ints to isinstance.
    if type(value) is not int:
        return NOT_AN_INTEGER
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        return PRIORITY_RANGE
    return None


def _script_problems(script: object) -> Problems:
    if type(script) is not dict:
        return {"_schema": [NOT_AN_OBJECT]}
    problems: Problems = {name: [UNKNOWN_FIELD] for name in script.keys() - SCRIPT_FIELDS}
    for name in ("type", "text"):
        if name in script and type(script[name]) is not str:
            problems[name] = [NOT_A_STRING]
    if "steps" in script:
        steps = script["steps"]
        if type(steps) is not list:
            problems["steps"] = [NOT_A_LIST]
        else:
            # Only "each step is an object" is checked here: what a step holds depends on its
            # type, and an unknown type is an invalid_script error (batchcalls.domain.scripts), as is
            # a list of too many steps (not looked through, to keep the answer short).
            bad = (
                {}
                if len(steps) > MAX_STEPS
                else {i: [NOT_A_MAPPING] for i, step in enumerate(steps) if type(step) is not dict}
            )
            if bad:
                problems["steps"] = bad
    return problems


def _call_problems(call: object) -> Problems:
    if type(call) is not dict:
        return {"_schema": [NOT_AN_OBJECT]}
    problems: Problems = {}
    if not call.keys() <= CALL_FIELDS:
        problems.update((name, [UNKNOWN_FIELD]) for name in call.keys() - CALL_FIELDS)
    if "phone_number" not in call:
        problems["phone_number"] = [REQUIRED]
    elif type(call["phone_number"]) is not str:
        problems["phone_number"] = [NOT_A_STRING]
    if "script" not in call:
        problems["script"] = [REQUIRED]
    else:
        script_problems = _script_problems(call["script"])
        if script_problems:
            problems["script"] = script_problems
    if "voice_id" in call and type(call["voice_id"]) is not str:
        problems["voice_id"] = [NOT_A_STRING]
    if "priority" in call:
        priority_problem = _priority_problem(call["priority"])
        if priority_problem:
            problems["priority"] = [priority_problem]
    problems.update(call_data_problems(call))
    return problems


class CallList(fields.Field[list[dict[str, Any]]]):
    """The `calls` list, checked by a plain loop instead of a nested schema per call.

    A batch may hold 100,000 calls; nested marshmallow schemas took 3.6 s for that many, this
    loop a small fraction of it. Error messages and paths are the ones a nested schema would give.
    """

    default_error_messages = {"invalid": NOT_A_LIST, "empty": "Must hold at least one call."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        if type(value) is not list:
            raise self.make_error("invalid")
        if not value:
            raise self.make_error("empty")
        errors: dict[int, Problems] = {}
        for index, call in enumerate(value):
            problems = _call_problems(call)
            if problems:
                errors[index] = problems
        if errors:
            raise ValidationError(errors)
        return value


class Seconds(fields.Float):
    """A JSON number: an int or a float, never a string or a boolean."""

    def _validated(self, value: Any) -> float:
        if isinstance(value, (str, bytes)):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


def _doc(description: str, **extra: Any) -> dict[str, Any]:
    """A field's `metadata` for the published OpenAPI document (api/openapi.py)."""
    return {"description": description, **extra}


def _timestamp(description: str, example: str) -> fields.String:
    return fields.String(metadata=_doc(description, example=example, format="date-time"))


class RetryConfigSchema(Schema):
    """Which outcomes are retried, how often and after how long."""

    class Meta:
        unknown = RAISE

    max_attempts = fields.Integer(
        strict=True,
        metadata=_doc(f"Attempts in all, the first one included (1 to {MAX_ATTEMPTS_LIMIT}; default 1).", example=3),
    )
    delay = Seconds(
        metadata=_doc(
            f"Seconds from the end of an attempt to the first retry (0 to {MAX_DELAY_SECONDS:.0f}; default 60).",
            example=300,
        )
    )
    backoff_multiplier = Seconds(
        metadata=_doc(
            f"Retry n waits `delay * backoff_multiplier ** (n - 1)` seconds (1 to {MAX_BACKOFF_MULTIPLIER:.0f};"
            " default 1).",
            example=2,
        )
    )
    retry_on = fields.List(
        fields.String(),
        metadata=_doc(
            "Outcomes that are retried (default busy, no_answer, failed); any of busy, no_answer, failed,"
            " rejected, machine.",
            example=["busy", "no_answer"],
        ),
    )


class BatchRequestSchema(Schema):
    """Shape of the `POST /v1/batches` body; values are judged by `build_batch`."""

    class Meta:
        unknown = RAISE

    calls = CallList(required=True, metadata=_doc("The calls to place, at least one."))
    concurrency = fields.Integer(
        strict=True,
        metadata=_doc(
            "Most calls of this batch live at once (default 10, at most the account's maximum,"
            " BATCHCALLS_MAX_CONCURRENCY); outside 1..maximum is a 422 `concurrency_limit`.",
            example=5,
        ),
    )
    retry_config = fields.Nested(
        RetryConfigSchema,
        metadata=_doc("Retries of calls that end with chosen outcomes; absent means one attempt per call."),
    )
    # Whether the URL may be called at all (scheme policy, private addresses) is decided where
    # callbacks are delivered; here it only has to be an http(s) URL.
    callback_url = fields.Url(
        allow_none=True,
        require_tld=False,
        schemes={"http", "https"},
        metadata=_doc(
            "Where the batch's signed events are POSTed (see `webhooks`); https unless the operator allows http.",
            example="https://example.com/hooks/batchcalls",
            format="uri",
        ),
    )
    priority = fields.Integer(
        strict=True,
        validate=validate.Range(min=MIN_PRIORITY, max=MAX_PRIORITY),
        metadata=_doc("0 (highest) to 9; the default of every call of the batch.", example=5),
    )
    metadata = fields.Dict(
        keys=fields.String(),
        validate=check_metadata,
        metadata=_doc(
            f"Any JSON object of at most {MAX_METADATA_BYTES} bytes, echoed in the status body and the batch events.",
            example={"campaign": "spring"},
        ),
    )
    expires_at = _timestamp(
        "ISO 8601 date and time with a UTC offset, in the future. Calls not yet placed by then end"
        " `failed` with outcome `expired` (a retry that would come due after it too); live calls finish,"
        " and the batch ends with its terminal event. Without an offset, malformed or past: a 422 naming"
        " `expires_at`.",
        "2026-11-23T18:00:00+01:00",
    )
    start_at = _timestamp(
        "ISO 8601 date and time with a UTC offset. Until then the batch is `scheduled`: none of its calls"
        " is dialed, and it holds no slot. Now or past: it starts at once. Without an offset, malformed, or"
        " not before `expires_at`: a 422 naming `start_at`.",
        "2026-11-23T09:00:00+01:00",
    )

    dedupe = dedupe_field()
    invalid_numbers = invalid_numbers_field()
    calling_window = fields.Raw(metadata=_doc(CALLING_WINDOW_DOC, example=CALLING_WINDOW_EXAMPLE))
    voicemail = fields.Raw(metadata=_doc(VOICEMAIL_DOC, example=VOICEMAIL_EXAMPLE))


_SCHEMA = BatchRequestSchema()


def _missing_scripts_only(details: dict[str, list[str]]) -> bool:
    return all(
        re.fullmatch(r"calls\[\d+\]\.script", path) and messages == [REQUIRED] for path, messages in details.items()
    )


def load_batch_request(body: object) -> dict[str, Any]:
    """The body of `POST /v1/batches` (parsed JSON) checked for shape and types.

    Returns a dict holding only the fields given; `calls` is the body's own list of call dicts.
    Raises `InvalidRequest` whose details map each bad field's path (`calls[3].priority`,
    `retry_config.delay`) to its messages.
    """
    try:
        data: dict[str, Any] = _SCHEMA.load(body)  # type: ignore[arg-type]
    except ValidationError as e:
        details = flatten_errors(e.messages)
        if _missing_scripts_only(details):
            # DESIGN §2: a missing script is an invalid_script error, like an empty one.
            scripts = {path: ["is required"] for path in details}
            first = next(iter(scripts))
            rest = f" (and {len(scripts) - 1} more; see details)" if len(scripts) > 1 else ""
            raise InvalidScript(f"invalid script: {first}: is required{rest}", scripts) from e
        path, messages = next(iter(details.items()))
        more = len(details) - 1
        message = f"Invalid request: {path}: {messages[0]}"
        if more:
            message += f" (and {more} more field{'s' if more > 1 else ''}; see details)"
        raise InvalidRequest(message, details) from e
    return data
