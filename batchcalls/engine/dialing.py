"""Dialing: place one attempt of a call that holds a slot, at most once, within the provider's
calls-per-second limit, and act on a create the provider refused."""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from batchcalls.adapters import gates as gates_mod
from batchcalls.adapters.logs import quoted
from batchcalls.adapters.store import calls
from batchcalls.adapters.telephony.base import DialRequest
from batchcalls.domain.call_windows import for_call, stored_window
from batchcalls.domain.errors import ProviderError
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import LIVE_STATUSES, PENDING_STATUSES, AttemptStatus, Outcome
from batchcalls.domain.voicemail import message_of
from batchcalls.engine.base import EngineParts

log = logging.getLogger("batchcalls.engine")

# A call that reserved a creation instant dials within this much of it, or reserves again; the
# rate window is widened by the same amount, so no window of one second holds more than the limit.
CPS_TOLERANCE = 0.03
WINDOW_RECHECK = timedelta(days=1)


class Dialing(EngineParts):
    def place_calls(
        self, batch_id: str, call_ids: list[str], granted_at: float | None = None, *, freed: bool = False
    ) -> None:
        """Place several granted calls of a batch, one after another."""
        for call_id in call_ids:
            self.place_call(call_id, granted_at=granted_at, batch_id=batch_id, freed=freed)

    def place_call(
        self,
        call_id: str,
        reserved_at: float | None = None,
        granted_at: float | None = None,
        batch_id: str | None = None,
        *,
        freed: bool = False,
    ) -> None:
        """Dial one attempt of a call that holds a slot, at most once. `granted_at` (Unix seconds)
        is when the slot was given, for the dispatch-latency metric. With `batch_id` (the task
        carries it) and no calls-per-second limit, the call is not read first: its lease is
        checked in Redis and the attempt recorded in one statement, which finds out whether the
        call is still waiting to be dialed."""
        assert self.provider is not None
        call = None
        if batch_id is None or self.settings.cps_limit:
            with self.db.transaction() as cur:
                call = calls.load_call(cur, call_id)
            if call is None:
                return
            batch_id = call["batch_id"]
            if call["status"] not in PENDING_STATUSES:
                self._not_dialed(batch_id, call_id, call["status"])
                return
        if not self.gates.renew(batch_id, [call_id]):
            if call is None:
                self._not_dialed(batch_id, call_id)
            log.info(
                "not dialing, the call holds no slot (Redis state was lost) batch_id=%s call_id=%s", batch_id, call_id
            )
            return
        begun = self._start_attempt(call_id, batch_id, call, reserved_at)
        if begun is None:
            return
        started, batch_started, reserved_at = begun
        attempt = started["attempt_count"]
        request = DialRequest(
            call_id,
            attempt,
            started["phone_number"],
            started["script"],
            started["voice_id"],
            voicemail=message_of(started.get("voicemail")),
        )
        log.info("dialing call_id=%s batch_id=%s attempt=%d", call_id, batch_id, attempt)
        created_at = time.time()
        # `batch.started` is delivered after the create, never between the rate check and it:
        # the kick may send a task (a process's first send opens a broker connection, 15 ms and
        # more), and a create that late was past its calls-per-second instant (11 in a 1 s
        # window). And after the provider id is stored: a kick that fails must not lose it.
        kick = batch_started is not None and bool(batch_started["callback_url"])
        try:
            provider_call_id = self.provider.create_call(request)
        except ProviderError as exc:
            self._provider_refused(started, attempt, exc)
            if kick:
                self.kick_delivery(batch_id)
            return
        finally:
            if self.metrics is not None:
                waited = None if granted_at is None or reserved_at is not None else created_at - granted_at
                self.metrics.call_dialed(None if waited is None else max(0.0, waited), freed=freed)
        with self.db.autocommit() as cur:
            calls.set_provider_call_id(cur, call_id, attempt, provider_call_id)
        if kick:
            self.kick_delivery(batch_id)

    def _start_attempt(
        self,
        call_id: str,
        batch_id: str,
        call: dict[str, Any] | None,
        reserved_at: float | None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None, float | None] | None:
        """Record the call's next attempt within its calls-per-second instant (`call` is None
        when no limit applies). Returns the started call, its batch when this attempt started
        it, and its turn's creation instant; or None when the call is not to be dialed here."""
        assert self.provider is not None
        deadline = math.inf if call is None else self._wait_for_rate(call, reserved_at)
        if deadline is None:
            return None
        try:
            started, batch = calls.record_attempt(self.db, call_id, self.provider.name, self._closed_until)
        except calls.WindowClosed as closed:
            self._wait_for_window(batch_id, call_id, closed.opening, unused=reserved_at)
            return None
        if started is None:
            if batch is not None:  # its number is suppressed: the call ended instead
                self._suppressed(batch, call_id, unused=reserved_at)
            else:
                self._not_dialed(batch_id, call_id)
            return None
        batch_started = batch
        if time.time() <= deadline:
            return started, batch_started, reserved_at
        # Recording the attempt took us past our creation instant: take it back and wait for
        # another turn, so no window of a second ever holds more creations than the limit.
        with self.db.transaction() as cur:
            calls.undo_attempt(cur, call_id, started["attempt_count"])
        assert call is not None  # a deadline is finite only under a limit, where the call was read
        self._back_in_line(call, "recording the attempt took it past its creation turn", unused=reserved_at)
        return None

    def _closed_until(self, call: dict[str, Any]) -> datetime | None:
        """When the call's calling window opens, if it is closed now (None: dial it)."""
        stored = call["calling_window"] if call["calling_window"] is not None else call["batch_calling_window"]
        window = for_call(stored_window(stored), call["phone_number"], self.settings.clock_offset)
        if window is None:
            return None
        now = datetime.now(UTC)
        opening = window.opening(now)
        if opening is None:  # it opens no more (its dates excluded since): looked at again each day
            return now + WINDOW_RECHECK
        return opening if opening > now else None

    def _wait_for_window(self, batch_id: str, call_id: str, opening: datetime, *, unused: float | None) -> None:
        """A call given a slot outside its calling window waits `scheduled` for its opening, in
        its batch's delayed set (one wake-up per batch), holding no slot; its turn's instant goes
        back to the limit."""
        with self.db.transaction() as cur:
            parked = calls.park_call(cur, call_id, opening)
            call = calls.load_call(cur, call_id) if parked else None
        log.info("not dialing, outside its calling window batch_id=%s call_id=%s opens=%s", batch_id, call_id, opening)
        if unused is not None:
            self.gates.give_back(self.settings.provider_account, unused)
        if call is None:
            self._not_dialed(batch_id, call_id)
            return
        score = gates_mod.ready_score(call["priority"], call["seq"])
        self.dispatch(batch_id, release=[call_id], delay=[(call_id, score, opening.timestamp())])

    def _suppressed(self, batch: dict[str, Any], call_id: str, *, unused: float | None) -> None:
        """A call ended, not dialed, for its number is suppressed: its slot goes to the next call
        (or, when it was the batch's last, the batch leaves Redis), its turn's instant back to
        the limit, and its events to the batch's receiver."""
        log.info("not dialing, the number is suppressed batch_id=%s call_id=%s", batch["id"], call_id)
        if self.metrics is not None:
            self.metrics.call_finished(Outcome.SUPPRESSED.value)
        if unused is not None:
            self.gates.give_back(self.settings.provider_account, unused)
        finished = batch["finished_at"] is not None
        if batch["callback_url"]:
            self.kick_delivery(batch["id"], urgent=finished)
        if finished:
            self.gates.forget(batch["id"])
        else:
            self.dispatch(batch["id"], release=[call_id])

    def _not_dialed(self, batch_id: str, call_id: str, status: str | None = None) -> None:
        """A call that was not dialed: if it is final, its slot is not anyone's; if it still
        waits (its batch was paused after the slot was given), it goes back in line, unless its
        batch has expired (then the batch's waiting calls end now)."""
        call = None
        if status is None:
            with self.db.transaction() as cur:
                call = calls.load_call(cur, call_id)
            status = call["status"] if call is not None else None
        if call is not None and status in PENDING_STATUSES and self.expire(batch_id):
            # Its batch passed its `expires_at` before the wake-up at it ran: the call ended
            # `expired` with the batch's other waiting calls, and its slot is free. Put back in
            # line, it would be granted and refused again until then.
            self.dispatch(batch_id, release=[call_id])
        elif call is not None and status in PENDING_STATUSES:
            self._back_in_line(call, "its batch is not dialing")
        elif status is not None and status not in PENDING_STATUSES and status not in LIVE_STATUSES:
            self.dispatch(batch_id, release=[call_id])

    def _wait_for_rate(self, call: dict[str, Any], reserved_at: float | None) -> float | None:
        """Hold the call until its turn's creation instant under the provider's calls-per-second
        limit; returns the latest time the creation may happen (infinity without a limit), or
        None when the call went back in line instead."""
        if not self.settings.cps_limit:
            return math.inf
        if reserved_at is not None and (wait := reserved_at - time.time()) > 0:
            time.sleep(wait)
        if reserved_at is None or time.time() > reserved_at + CPS_TOLERANCE:
            # Without its turn's instant (a retry after a throttled create, a task sent again, a
            # task that came too late for its instant), the call waits for a turn like the rest:
            # an instant of its own would go ahead of the scheduler's order.
            self._back_in_line(call, "it missed its creation turn", unused=reserved_at)
            return None
        return reserved_at + CPS_TOLERANCE

    def _back_in_line(self, call: dict[str, Any], reason: str, *, unused: float | None = None) -> None:
        """Give the call's slot back and put it first in its batch's line for the next turn; and
        its turn's instant, `unused`, back to the limit: no call was created at it."""
        log.info("call back in line batch_id=%s call_id=%s reason=%s", call["batch_id"], call["id"], quoted(reason))
        if unused is not None:
            self.gates.give_back(self.settings.provider_account, unused)
        score = gates_mod.ready_score(call["priority"], call["seq"])
        self.dispatch(call["batch_id"], release=[call["id"]], delay=[(call["id"], score, time.time())])

    def _provider_refused(self, call: dict[str, Any], attempt: int, exc: ProviderError) -> None:
        if exc.definite and exc.throttled:
            with self.db.transaction() as cur:
                undone = calls.undo_attempt(cur, call["id"], attempt)
            if undone:
                log.warning(
                    "provider throttled the call, waiting for a new slot batch_id=%s call_id=%s attempt=%d",
                    call["batch_id"],
                    call["id"],
                    attempt,
                )
                self.tasks.place_call(call["batch_id"], call["id"], call["priority"], countdown=1.0)
            return
        if exc.definite:
            self.record_event(
                ProviderEvent(
                    call["id"], attempt, AttemptStatus.ENDED, time.time(), Outcome.FAILED, error=str(exc)[:500]
                )
            )
            return
        log.warning(
            "create has an unknown result batch_id=%s call_id=%s attempt=%d error=%s",
            call["batch_id"],
            call["id"],
            attempt,
            quoted(exc),
        )
