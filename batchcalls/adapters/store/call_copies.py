"""A submitted batch's calls written to Postgres by COPY: the hot part of a submit."""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Sequence
from datetime import datetime

import orjson
from psycopg2.extras import RealDictCursor

from batchcalls.domain import lifecycle
from batchcalls.domain.models import NewBatch
from batchcalls.domain.states import CallStatus
from batchcalls.domain.window_spec import to_json


def _json(value: object) -> str:
    # orjson: a tenth of json.dumps's time, which was a tenth of a large submit's.
    return orjson.dumps(value).decode()


def _suppressed_ending() -> lifecycle.FinishCall:
    """How a call whose number is suppressed at submit ends (`lifecycle.CALL_MOVES`): it is
    stored final, with no attempt. It writes no call event: the submit's answer shows it."""
    _, effects = lifecycle.call_move(lifecycle.Call(CallStatus.QUEUED, 0), lifecycle.Trigger.SUPPRESS, None, None)
    return next(e for e in effects if isinstance(e, lifecycle.FinishCall))


SUPPRESSED = _suppressed_ending()


def copy_calls(
    cur: RealDictCursor,
    batch_id: str,
    batch: NewBatch,
    suppressed: set[str],
    openings: Sequence[datetime | None] = (),
    *,
    first_seq: int = 0,
) -> list[tuple[str, int, int, datetime | None]]:
    """COPY the batch's calls; those to numbers in `suppressed` are stored final, those with an
    opening in `openings` (by index: when the call's calling window next opens, None when it is
    open now) `scheduled` until it. `first_seq` numbers the first (a streamed batch comes in
    parts). Returns the others, to be dialed: (id, seq, priority, opening)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    ids = []
    random_hex = secrets.token_hex(10 * len(batch.calls))  # one read of the system's randomness
    for index, call in enumerate(batch.calls):
        seq = first_seq + index
        call_id = "call_" + random_hex[20 * index : 20 * index + 20]
        ended = call.phone_number in suppressed
        opening = openings[index] if openings else None
        if not ended:
            ids.append((call_id, seq, call.priority, opening))
        status = CallStatus.SCHEDULED if opening is not None else CallStatus.QUEUED
        writer.writerow(
            (
                call_id,
                batch_id,
                seq,
                call.phone_number,
                call.priority,
                call.voice_id or "",
                _json(call.script),
                SUPPRESSED.status.value if ended else status.value,
                SUPPRESSED.outcome.value if ended else "",
                "" if ended or opening is None else opening.isoformat(),
                "" if call.calling_window is None else _json(to_json(call.calling_window)),
                "" if call.metadata is None else _json(call.metadata),
                "" if call.variables is None else _json(call.variables),
                "" if call.voicemail is None else _json(call.voicemail),
            )
        )
    buf.seek(0)
    cur.copy_expert(
        "COPY calls (id, batch_id, seq, phone_number, priority, voice_id, script, status, outcome,"
        " next_attempt_at, calling_window, metadata, variables, voicemail) FROM STDIN WITH (FORMAT csv, NULL '')",
        buf,
    )
    return ids
