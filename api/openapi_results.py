"""The results export (`GET /v1/batches/{batch_id}/results`) as an apispec operation. No I/O."""

from __future__ import annotations

from typing import Any

from api.openapi_errors import refs
from batchcalls.domain import results

_JSONL_EXAMPLE = (
    '{"id": "call_1", "phone_number": "+14155552671", "status": "completed", "outcome": "completed",'
    ' "attempts": 1, "last_error": null, "first_dialed_at": "2026-11-23T13:43:30.120Z",'
    ' "answered_at": "2026-11-23T13:43:34.123Z", "ended_at": "2026-11-23T13:44:04.623Z", "talk_time": 30.5,'
    ' "voicemail_left": false, "metadata": {"crm_id": "A-1"}, "variables": {"name": "Ann"},'
    ' "responses": [{"id": "…", "step": 1, "name": "menu", "attempt": 1, "digits": "1", "speech": [],'
    ' "timed_out": false, "at": "2026-11-23T13:43:50.001Z"}]}\n'
)
_CSV_EXAMPLE = (
    ",".join(results.csv_header(["menu"]))
    + "\r\ncall_1,+14155552671,completed,completed,1,,2026-11-23T13:43:30.120Z,2026-11-23T13:43:34.123Z,"
    '2026-11-23T13:44:04.623Z,30.500,false,"{""crm_id"": ""A-1""}","{""name"": ""Ann""}","[…]",1\r\n'
)
DESCRIPTION = (
    "Every call of the batch, one row per call in submission order, streamed (chunked) from a"
    " server-side cursor: memory stays flat whatever the batch's size. The format is `format`, else"
    " the first of `Accept` that names one (`application/x-ndjson`, `text/csv`), else JSONL.\n\n"
    "Each row: `id`, `phone_number`, `status`, `outcome`, `attempts` (how many were dialed),"
    " `last_error`, `first_dialed_at` (the first attempt's dial), `answered_at` and `talk_time`"
    " (seconds from answer to end) of the last answered attempt, `ended_at` (the last attempt's end),"
    " `voicemail_left`, `metadata`, `variables` and `responses` (every captured DTMF and speech"
    " answer, as in `/calls`). Times are ISO 8601 UTC with milliseconds.\n\n"
    "CSV: a header row; `metadata`, `variables` and `responses` are JSON text; one more"
    " `response.<name>` column per named `input` step of the batch's first call's script holds the"
    " call's last answer to it (its digits, else its best speech text). A cell that starts with"
    " `=`, `+`, `-`, `@`, a tab or a carriage return is written with a leading `'` (so a spreadsheet"
    " does not run it as a formula), unless it is a plain number such as a phone number."
)


def results_paths(
    batch_id: dict[str, Any], bearer: list[dict[str, list[str]]], counted: dict[str, Any]
) -> dict[str, Any]:
    headers = {
        **counted,
        "Content-Disposition": {
            "description": "`attachment`, named `<batch_id>.jsonl` or `<batch_id>.csv`.",
            "schema": {"type": "string"},
        },
    }
    return {
        "/v1/batches/{batch_id}/results": {
            "get": {
                "operationId": "batchResults",
                "summary": "A batch's results, streamed",
                "tags": ["batches"],
                "security": bearer,
                "description": DESCRIPTION,
                "parameters": [
                    batch_id,
                    {
                        "in": "query",
                        "name": "format",
                        "required": False,
                        "description": "`jsonl` (one JSON object a line) or `csv`; overrides `Accept`.",
                        "schema": {"type": "string", "enum": list(results.FORMATS)},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The calls, streamed.",
                        "headers": headers,
                        "content": {
                            results.MEDIA_TYPES[results.JSONL]: {
                                "schema": {"type": "string"},
                                "example": _JSONL_EXAMPLE,
                            },
                            results.MEDIA_TYPES[results.CSV]: {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
                        },
                    },
                    **refs("Unauthorized", "NotFound", "InvalidQuery", "RateLimited"),
                },
            },
        },
    }
