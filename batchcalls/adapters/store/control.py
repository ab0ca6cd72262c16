"""Commands on a batch in Postgres: pause, resume and cancel under the batch's row lock, its start
and expiry, and the hangup of one live call of a cancelled batch. `commands` and `lifecycle`
decide; this writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg2.extras import RealDictCursor

from batchcalls.adapters.store import batches
from batchcalls.adapters.store.calls import FINAL_COUNTERS, end_batch_if_done, finish_call
from batchcalls.adapters.store.db import execute
from batchcalls.adapters.store.outbox import add_event
from batchcalls.domain import commands, lifecycle
from batchcalls.domain.errors import NotFound
from batchcalls.domain.lifecycle_data import EndCalls, HangUp, SetBatchStatus, WriteEvent
from batchcalls.domain.payloads import batch_view
from batchcalls.domain.states import ACTIVE_BATCH_STATUSES, AttemptStatus, BatchStatus, CallStatus, values


@dataclass
class Commanded:
    batch: dict[str, Any]  # the batch's row after the command
    hang_up: list[str] = field(default_factory=list)  # live calls to end and hang up, one by one
    events: int = 0  # events written (to be delivered)
    ended: int = 0  # calls the command ended


def command_batch(
    cur: RealDictCursor, tenant_id: int, batch_id: str, command: commands.Command, *, hang_up: bool = False
) -> Commanded:
    """Apply `command` to a batch of the tenant, in the caller's transaction. The batch's row is
    locked first: commands on one batch take turns with each other, with the end of its calls
    (which lock it last), and with the start of an attempt (which holds its share lock), so an
    attempt is either recorded before the command answers or refused after it. Raises NotFound
    (another tenant's batch too) and `InvalidState`."""
    execute(
        cur,
        "SELECT *, coalesce(start_at > clock_timestamp(), false) AS before_start FROM batches"
        " WHERE id = %s AND tenant_id = %s FOR NO KEY UPDATE",
        (batch_id, tenant_id),
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no batch {batch_id}")
    before_start = bool(row.pop("before_start"))
    return _apply(cur, row, command, before_start=before_start, hang_up=hang_up)


def start_batch(cur: RealDictCursor, batch_id: str) -> Commanded | None:
    """Start a batch whose `start_at` has come (by the database's clock), under its row lock:
    `scheduled` becomes `queued`; any other active batch is left as it is (`BATCH_MOVES`). None
    when its `start_at` is still ahead or the batch has finished. The caller opens its gate in
    Redis before it commits, so a command after the start finds the gate open."""
    execute(
        cur,
        "SELECT * FROM batches WHERE id = %s AND status = ANY(%s) AND start_at <= clock_timestamp() FOR NO KEY UPDATE",
        (batch_id, values(ACTIVE_BATCH_STATUSES)),
    )
    row = cur.fetchone()
    return None if row is None else _apply(cur, row, commands.Command.START)


def expire_batch(cur: RealDictCursor, batch_id: str) -> Commanded | None:
    """End the waiting calls of a batch whose `expires_at` has passed (by the database's clock)
    as `expired`, in one statement under the batch's row lock, as a cancel ends them; the batch
    ends now if none of its calls is live, else with its last live call. None when the batch
    has not expired or has finished. Repeatable: it ends the calls that are waiting again since
    (a retry scheduled by an attempt that ended in between)."""
    execute(
        cur,
        "SELECT * FROM batches WHERE id = %s AND status = ANY(%s) AND expires_at <= clock_timestamp()"
        " FOR NO KEY UPDATE",
        (batch_id, values(ACTIVE_BATCH_STATUSES)),
    )
    row = cur.fetchone()
    return None if row is None else _apply(cur, row, commands.Command.EXPIRE)


def _apply(
    cur: RealDictCursor,
    row: dict[str, Any],
    command: commands.Command,
    *,
    before_start: bool = False,
    hang_up: bool = False,
) -> Commanded:
    """Write the effects of `command` on the batch whose row (`row`) the caller has locked."""
    batch_id = row["id"]
    done = Commanded(row)
    effects = commands.batch_command(
        BatchStatus(row["status"]),
        command,
        started=row["started_at"] is not None,
        before_start=before_start,
        hang_up=hang_up,
    )
    for effect in effects:
        if isinstance(effect, SetBatchStatus):
            execute(cur, "UPDATE batches SET status = %s WHERE id = %s RETURNING *", (effect.status.value, batch_id))
            done.batch = cur.fetchone()
        elif isinstance(effect, WriteEvent):
            add_event(cur, effect.type, batch_id, batch_view(done.batch, batches.status_counts(cur, batch_id)))
            done.events += 1
        elif isinstance(effect, EndCalls):
            done.ended += _end_calls(cur, done, effect)
        elif isinstance(effect, HangUp):
            execute(
                cur,
                "SELECT id FROM calls WHERE batch_id = %s AND status = ANY(%s) ORDER BY seq",
                (batch_id, values(effect.statuses)),
            )
            done.hang_up = [r["id"] for r in cur.fetchall()]
    if done.ended:
        before = done.batch["finished_at"]
        done.batch = end_batch_if_done(cur, done.batch)
        done.events += before is None and done.batch["finished_at"] is not None
    return done


def _end_calls(cur: RealDictCursor, done: Commanded, effect: EndCalls) -> int:
    """End every call of the batch in `effect.statuses`, in one statement, and count them."""
    column = FINAL_COUNTERS[effect.status]
    execute(
        cur,
        "WITH e AS (UPDATE calls SET status = %s, outcome = %s, next_attempt_at = NULL,"
        " updated_at = clock_timestamp() WHERE batch_id = %s AND status = ANY(%s) RETURNING 1)"
        f" UPDATE batches SET {column} = {column} + (SELECT count(*) FROM e)"  # noqa: S608
        " WHERE id = %s RETURNING *, (SELECT count(*) FROM e) AS ended",
        (effect.status.value, effect.outcome.value, done.batch["id"], values(effect.statuses), done.batch["id"]),
    )
    row = cur.fetchone()
    ended = int(row.pop("ended"))
    done.batch = row
    return ended


def hang_up_call(cur: RealDictCursor, call_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """End a live call of a cancelled batch by `commands.HANG_UP_TRIGGER` (a call no longer live
    is left as it is), in the caller's transaction. Returns its current attempt when that has not
    ended (to hang up through the provider: `provider_call_id` is None while the create is in
    flight), and the batch row when the call ended here."""
    execute(
        cur,
        "SELECT c.*, b.callback_url AS batch_callback_url, a.number AS attempt_number,"
        " a.status AS attempt_status, a.provider_call_id AS attempt_provider_call_id"
        " FROM calls c JOIN batches b ON b.id = c.batch_id"
        " LEFT JOIN attempts a ON a.call_id = c.id AND a.number = c.attempt_count"
        " WHERE c.id = %s FOR UPDATE OF c",
        (call_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None, None
    callback_url = row.pop("batch_callback_url")
    attempt = {
        "number": row.pop("attempt_number"),
        "status": row.pop("attempt_status"),
        "provider_call_id": row.pop("attempt_provider_call_id"),
    }
    live = attempt["number"] is not None and attempt["status"] != AttemptStatus.ENDED.value
    call = lifecycle.Call(CallStatus(row["status"]), row["attempt_count"])
    _, effects = lifecycle.call_move(call, commands.HANG_UP_TRIGGER, None, None)
    batch = None
    if any(isinstance(e, lifecycle.FinishCall) for e in effects):
        batch, _ = finish_call(cur, row, effects, callback_url)
    return (attempt if live else None), batch
