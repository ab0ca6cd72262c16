"""Pacing: under the provider's calls-per-second limit, which call is created next is decided at
the instant it may be created, not when its slot was given.

A batch that could dial one more call registers with the account's dial scheduler
(`adapters/lua/scheduler.lua`): priority first, then fair among tenants, then among a tenant's
batches. One `pace` task at a time in the fleet takes the turns: at each creation instant it asks
the scheduler whose turn it is, gives that batch's best waiting call a slot, and sends its
`place_call`. A call holds a slot only from its turn on, so a new batch, or an urgent one, waits
for the next instant, not behind every call that bigger batches were granted before it.
"""

from __future__ import annotations

import time
import uuid

from batchcalls.adapters.gates import Grant
from batchcalls.adapters.scheduler import Report, Turn
from batchcalls.engine.base import EngineParts
from batchcalls.engine.dialing import CPS_TOLERANCE

# A pacer task takes turns for this long, then hands the role to a new task: a worker being
# stopped waits for no longer, and a pacer's task never nears the broker's visibility timeout.
PACE_SLICE = 5.0
# A turn is taken this long before its instant: the `place_call` it sends sleeps out the rest,
# so the call is created on time although the task crossed the broker.
LOOKAHEAD = 0.1
# The pacer's mark outlives its last turn (or the end of its wait) by this much; past it, a
# pacer that died is replaced at the next registration or reconciler sweep.
HOLD = 3.0
# The windows are widened by this much beyond the lateness a call is allowed (CPS_TOLERANCE): the
# time from its last check of the clock to the provider's request.
CREATE_SLACK = 0.01
# Paced `place_call`s are due at once: they go ahead of other work in the queue.
PACED_PRIORITY = 0


class Pacing(EngineParts):
    def _paced(self) -> bool:
        return bool(self.settings.cps_limit)

    def _join(self, batch_id: str, grant: Grant, released: list[str]) -> None:
        """Tell the dial scheduler of the batch's released slots, and register the batch when it
        could dial one more call."""
        if grant.wants is None and not released:
            return
        if self.gates.settle(self.settings.provider_account, batch_id, grant.tenant, grant.wants, released):
            self.tasks.pace()

    def kick_pacer(self) -> bool:
        """Start a pacer when batches wait for turns and none runs (one died)."""
        if self._paced() and self.gates.kick(self.settings.provider_account):
            self.tasks.pace()
            return True
        return False

    def pace(self) -> int:
        """Take creation turns until no batch waits, another task is the pacer, or this task's
        slice ends (a new task goes on). Returns how many calls it sent to be placed."""
        limit = self.settings.cps_limit
        if not limit:
            return 0
        count, window = (1, 1.0 / limit) if limit < 1 else (int(limit), 1.0)
        tolerance = CPS_TOLERANCE + CREATE_SLACK + self.settings.cps_margin
        window += tolerance
        account, token = self.settings.provider_account, uuid.uuid4().hex
        end = time.monotonic() + PACE_SLICE
        report: Report | None = None
        placed = 0
        while True:
            turn = self.gates.take_turn(account, token, count, window, lookahead=LOOKAHEAD, hold=HOLD, report=report)
            if turn.kind == "grant":
                report = self._take(turn)
                placed += not report.give_back
                continue
            report = None
            if turn.kind != "wait":
                return placed
            if time.monotonic() + turn.wait > end:
                if self.gates.handoff(account, token):
                    self.tasks.pace(countdown=max(0.0, turn.wait - LOOKAHEAD))
                return placed
            time.sleep(max(0.0, turn.wait - LOOKAHEAD))

    def _take(self, turn: Turn) -> Report:
        """Give the turn's batch one slot and send its best call to be created at the turn's
        instant; the report says what the batch can do next (and gives the instant back when it
        placed nothing)."""
        grant = self.gates.acquire(turn.batch_id, at_most=1)
        if grant.missing:
            self.dispatch(turn.batch_id)  # rebuilt from Postgres, and registered again
            return Report(turn.batch_id, None, turn.tenant, turn.member, turn.member)
        call_id = ""
        if grant.granted:
            call_id, _ = grant.granted[0]
            self.tasks.place_call(turn.batch_id, call_id, PACED_PRIORITY, reserved_at=turn.at, granted_at=grant.now)
        if grant.expired:
            self._check_expired(turn.batch_id, grant.expired)
        if grant.next_due_in is not None:
            self._schedule_wake(turn.batch_id, grant.next_due_in)
        give_back = "" if grant.granted else turn.member
        return Report(turn.batch_id, grant.wants, turn.tenant, give_back, turn.member, call_id)
