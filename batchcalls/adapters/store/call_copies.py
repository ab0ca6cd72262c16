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
from batchcalls.domain.call_lists import SKIP_TRIGGERS
from batchcalls.domain.models import NewBatch
from batchcalls.domain.states import CallStatus
from batchcalls.domain.window_spec import to_json


def _json(value: object) -> str:
    # orjson: a tenth of json.dumps's time, which was a tenth of a large submit's.
    return orjson.dumps(value).decode()


def _submit_ending(trigger: lifecycle.Trigger) -> lifecycle.FinishCall:
    """How a call judged at submit ends (`lifecycle.CALL_MOVES`): its number suppressed, or
    skipped (`invalid_numbers: skip`). It is stored final, with no attempt, and writes no call
    event: the submit's answer shows it."""
    _, effects = lifecycle.call_move(lifecycle.Call(CallStatus.QUEUED, 0), trigger, None, None)
    return next(e for e in effects if isinstance(e, lifecycle.FinishCall))


SUPPRESSED = _submit_ending(lifecycle.Trigger.SUPPRESS)
SKIPPED = {trigger: _submit_ending(trigger) for trigger in SKIP_TRIGGERS}
# The batch's row counts the calls ended at submit in one counter (`batches.insert_batch`).
assert all(ending.status is SUPPRESSED.status for ending in SKIPPED.values())


def copy_calls(
    cur: RealDictCursor,
    batch_id: str,
    batch: NewBatch,
    suppressed: set[str],
    openings: Sequence[datetime | None] = (),
    *,
    first_seq: int = 0,
) -> list[tuple[str, int, int, datetime | None]]:
    """COPY the batch's calls; those to numbers in `suppressed`, then the skipped ones, are stored
    final (a skipped one with its `last_error`), those with an opening in `openings` (by index:
    when the call's calling window next opens, None when it is open now) `scheduled` until it.
    `first_seq` numbers the first (a streamed batch comes in parts). Returns the others, to be
    dialed: (id, seq, priority, opening)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    ids = []
    random_hex = secrets.token_hex(10 * len(batch.calls))  # one read of the system's randomness
    for index, call in enumerate(batch.calls):
        seq = first_seq + index
        call_id = "call_" + random_hex[20 * index : 20 * index + 20]
        ending = SUPPRESSED if call.phone_number in suppressed else None
        if ending is None and call.skipped is not None:
            ending = SKIPPED[call.skipped.trigger]
        opening = openings[index] if openings else None
        if ending is None:
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
                status.value if ending is None else ending.status.value,
                "" if ending is None else ending.outcome.value,
                "" if ending is not None or opening is None else opening.isoformat(),
                "" if call.calling_window is None else _json(to_json(call.calling_window)),
                "" if call.metadata is None else _json(call.metadata),
                "" if call.variables is None else _json(call.variables),
                "" if call.voicemail is None else _json(call.voicemail),
                "" if call.skipped is None or ending is SUPPRESSED else call.skipped.error,
            )
        )
    buf.seek(0)
    cur.copy_expert(
        "COPY calls (id, batch_id, seq, phone_number, priority, voice_id, script, status, outcome,"
        " next_attempt_at, calling_window, metadata, variables, voicemail, last_error) FROM STDIN WITH (FORMAT csv, NULL '')",
        buf,
    )
    return ids
