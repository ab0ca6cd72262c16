"""The end of a call in Postgres: its final state and event written, then counted on its batch
(which ends when that was its last call). Shared by provider events, commands and the refusal
of a suppressed number's dial."""

from __future__ import annotations

from typing import Any

from psycopg2.extras import RealDictCursor

from batchcalls.adapters.store.batches import FINAL_COUNTERS, end_batch_if_done
from batchcalls.adapters.store.call_reads import full_call
from batchcalls.adapters.store.db import execute
from batchcalls.adapters.store.outbox import add_event
from batchcalls.domain import lifecycle
from batchcalls.domain.payloads import call_view
from batchcalls.domain.states import CallStatus


def finish_call(
    cur: RealDictCursor,
    call: dict[str, Any],
    ending: tuple[lifecycle.Effect, ...],
    callback_url: str | None,
    attempts: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the `ending` of a call (effects with a `FinishCall`, as `lifecycle.finish` gives):
    its final state and its event; then count it on its batch, and finish the batch when this was
    its last call, as `lifecycle.on_call_final` says. The caller holds the call's row lock and has
    read the batch's `callback_url`; `attempts` are the call's attempts when the caller has them
    all. Returns the batch row and the call row."""
    final: dict[str, Any] = {}
    for effect in ending:
        if isinstance(effect, lifecycle.FinishCall):
            execute(
                cur,
                "UPDATE calls SET status = %s, outcome = %s, last_error = coalesce(%s, last_error),"
                " next_attempt_at = NULL, updated_at = clock_timestamp() WHERE id = %s"
                " RETURNING *, clock_timestamp() AS event_time",
                (effect.status.value, effect.outcome.value, effect.error, call["id"]),
            )
            final = cur.fetchone()
            event_time = final.pop("event_time")
        elif isinstance(effect, lifecycle.WriteEvent):
            data = full_call(cur, final) if attempts is None else call_view(final, attempts)
            add_event(cur, effect.type, call["batch_id"], data, known=(event_time, callback_url))
    # The batch's row last: every call of the batch that ends takes its lock, and holds it until
    # it commits. Taken first, it was held through the event's payload and insert as well, and
    # calls ending together queued behind it (the engine's throughput limit).
    column = FINAL_COUNTERS[CallStatus(final["status"])]
    execute(
        cur,
        f"UPDATE batches SET {column} = {column} + 1 WHERE id = %s RETURNING *",  # noqa: S608
        (call["batch_id"],),
    )
    return end_batch_if_done(cur, cur.fetchone()), final
