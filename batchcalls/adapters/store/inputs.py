"""A callee's answer to an input step in Postgres: stored on the call, and, when it is the
script's opt-out, the number suppressed for the tenant and the call ended `opted_out`, all in the
caller's transaction. `opt_out` decides whether an answer is one and `lifecycle` what it does to
the call; this writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2.extras import RealDictCursor

from batchcalls.adapters.store import suppressions
from batchcalls.adapters.store.calls import append_responses
from batchcalls.adapters.store.db import execute
from batchcalls.adapters.store.finishing import finish_call
from batchcalls.domain import lifecycle, opt_out, scripts
from batchcalls.domain.states import CallStatus

OPT_OUT_REASON = "opted out during call {call_id}"


@dataclass
class Input:
    added: int = 0  # responses stored (a repeated webhook adds none)
    opted_out: bool = False  # an answer was the step's opt-out
    suppressed: bool = False  # the number was added to the tenant's suppression list here
    effects: tuple[lifecycle.Effect, ...] = ()  # what the opt-out did to the call (none when it was over)
    batch: dict[str, Any] | None = None  # the batch's row when the call ended here


def record_input(cur: RealDictCursor, call_id: str, attempt: int, step: int, responses: list[dict[str, Any]]) -> Input:
    """Store `responses` to input step `step` of attempt `attempt`. When one is the step's
    opt-out, suppress the call's number for its tenant (a repeat changes nothing) and end the call
    by the `OPT_OUT` trigger. A call already over keeps its outcome, and its number is suppressed
    all the same: the callee asked. A step the call's script does not have stores nothing."""
    execute(
        cur,
        "SELECT c.*, b.tenant_id AS batch_tenant_id, b.callback_url AS batch_callback_url"
        " FROM calls c JOIN batches b ON b.id = c.batch_id WHERE c.id = %s FOR UPDATE OF c",
        (call_id,),
    )
    row = cur.fetchone()
    declared = scripts.input_step(row["script"], step) if row is not None else None
    if row is None or declared is None:
        return Input()
    tenant_id, callback_url = row.pop("batch_tenant_id"), row.pop("batch_callback_url")
    added = append_responses(cur, call_id, attempt, responses)
    if not any(opt_out.opts_out(declared, response) for response in responses):
        return Input(added)
    suppressed = suppressions.add(cur, tenant_id, [row["phone_number"]], OPT_OUT_REASON.format(call_id=call_id)) > 0
    call = lifecycle.Call(CallStatus(row["status"]), row["attempt_count"])
    _, effects = lifecycle.call_move(call, lifecycle.Trigger.OPT_OUT, None, None)
    batch = None
    if any(isinstance(e, lifecycle.FinishCall) for e in effects):
        batch, _ = finish_call(cur, row, effects, callback_url)
    return Input(added, True, suppressed, effects, batch)
