"""Applying provider events: each exactly once, in order, then the Redis work they leave (slots
renewed, parked for a retry or freed, delivery kicked, finished batches forgotten), done at once
or gathered (`Gathered`) and flushed once per batch for the events of many calls."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from batchcalls.adapters import gates as gates_mod
from batchcalls.adapters.logs import quoted
from batchcalls.adapters.store import attempts, calls, inputs
from batchcalls.adapters.store.calls import Applied, EventResult
from batchcalls.domain.errors import ProviderError
from batchcalls.domain.lifecycle import FinishCall, ReleaseSlot, ScheduleRetry
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import Outcome
from batchcalls.domain.voicemail import message_of
from batchcalls.engine.base import EngineParts

log = logging.getLogger("batchcalls.engine")


@dataclass
class Gathered:
    """The Redis work applied provider events leave, by batch, until `Engine.flush_events`."""

    kick: dict[str, bool] = field(default_factory=dict)  # batch -> urgent (its last events)
    renew: dict[str, list[str]] = field(default_factory=dict)
    release: dict[str, list[str]] = field(default_factory=dict)
    delay: dict[str, list[tuple[str, int, float]]] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)

    def clear(self) -> None:
        self.kick, self.renew, self.release, self.delay, self.finished = {}, {}, {}, {}, set()


class ApplyingEvents(EngineParts):
    def record_responses(self, call_id: str, attempt: int, responses: list[dict[str, Any]]) -> int:
        """Store what the callee answered (input results), each response once."""
        with self.db.transaction() as cur:
            return calls.append_responses(cur, call_id, attempt, responses)

    def record_input(self, call_id: str, attempt: int, step: int, responses: list[dict[str, Any]]) -> bool:
        """Store the callee's answers to input step `step`; when one is the step's opt-out,
        suppress the number for the tenant and end the call `opted_out` (its slot goes to the next
        call). True when the callee opted out: the caller ends the provider's call."""
        with self.db.transaction() as cur:
            done = inputs.record_input(cur, call_id, attempt, step, responses)
        if not done.opted_out:
            return False
        log.info("callee opted out call_id=%s attempt=%d suppressed=%s", call_id, attempt, done.suppressed)
        batch = done.batch
        if batch is None:
            return True
        if self.metrics is not None:
            self.metrics.call_finished(Outcome.OPTED_OUT.value)
        if batch["callback_url"]:
            self.kick_delivery(batch["id"], urgent=batch["finished_at"] is not None)
        if batch["finished_at"] is not None:
            self.gates.forget(batch["id"])
        elif any(isinstance(e, ReleaseSlot) for e in done.effects):
            self.dispatch(batch["id"], release=[call_id])
        return True

    def leave_voicemail(self, call_id: str, attempt: int, provider_call_id: str) -> bool:
        """The machine that answered this attempt beeped: have the provider speak the call's
        voicemail message, and record it on the attempt (`voicemail_left`). Once per attempt (a
        repeated beep or task is a no-op); nothing for a call that hangs up on machines. A
        provider refusal is logged, not retried: the moment after the beep has passed."""
        with self.db.transaction() as cur:
            voicemail, voice_id, left = attempts.voicemail_of(cur, call_id, attempt)
        text = message_of(voicemail)
        if text is None or left or self.provider is None:
            return False
        try:
            if not self.provider.leave_voicemail(provider_call_id, text, voice_id):
                return False
        except ProviderError as exc:
            log.warning("voicemail not left call_id=%s attempt=%d error=%s", call_id, attempt, quoted(str(exc)))
            return False
        with self.db.transaction() as cur:
            marked = attempts.mark_voicemail_left(cur, call_id, attempt, provider_call_id)
        log.info("voicemail left call_id=%s attempt=%d", call_id, attempt)
        return marked

    def record_event(self, event: ProviderEvent) -> str:
        """Apply a provider event (from a webhook, the simulator or a poll) exactly once."""
        return self.record_events([event])[0]

    def record_events(self, events: list[ProviderEvent], gathered: Gathered | None = None) -> list[str]:
        """Apply events of one call in order, each exactly once, in one transaction (the events
        of a call that came due together); then act on where the call ended up: a freed slot is
        given to the next call by a `place_call` task. With `gathered`, that Redis work waits
        for `flush_events`, to be done once per batch for the events of many calls. Returns how
        each event applied."""
        return self.record_events_placing(events, place_here=False, gathered=gathered)[0]

    def record_events_placing(
        self,
        events: list[ProviderEvent],
        *,
        place_here: bool = True,
        gathered: Gathered | None = None,
    ) -> tuple[list[str], str | None]:
        """`record_events` for an event task: with `place_here`, a slot the events free is given
        to the next call in this task. Returns how each event applied, and the call placed here
        (tasks return it, so that Flower shows where each call was dialed). The reconciler does
        not place here: a sweep must not wait on the provider for every call it resolves."""
        if len({e.call_id for e in events}) != 1:
            raise ValueError("record_events takes events of one call")
        last = None
        with self.db.transaction() as cur:
            if len({e.attempt for e in events}) == 1:
                results = calls.apply_events(cur, events, self.settings.clock_offset)
            else:
                results = [calls.apply_event(cur, event) for event in events]
            for result in results:
                if result.call is not None:
                    last = result
        work = Gathered() if gathered is None else gathered
        if last is not None:
            self._after_event(events[-1], last, work)
        placed = self.flush_events(work, place_here=place_here) if gathered is None else None
        return [result.applied for result in results], placed

    def _after_event(self, event: ProviderEvent, result: EventResult, work: Gathered) -> None:
        """Note what the event means for the call's slot: renewed while the call is live; parked
        for a retry, and freed, where the lifecycle's effects say so (`ScheduleRetry`,
        `ReleaseSlot`): the lifecycle alone decides when a slot is given back."""
        call, batch = result.call, result.batch
        assert call is not None
        batch_id = call["batch_id"]
        if result.applied == Applied.LIVE:
            work.renew.setdefault(batch_id, []).append(event.call_id)
        for effect in result.effects:
            if isinstance(effect, ScheduleRetry):
                score = gates_mod.ready_score(call["priority"], call["seq"])
                work.delay.setdefault(batch_id, []).append((event.call_id, score, effect.due.timestamp()))
            elif isinstance(effect, FinishCall):
                log.info("call finished call_id=%s batch_id=%s outcome=%s", event.call_id, batch_id, call["outcome"])
                if self.metrics is not None:
                    self.metrics.call_finished(call["outcome"])
                finished = batch is not None and batch["finished_at"] is not None
                if batch is not None and batch["callback_url"]:
                    work.kick[batch_id] = work.kick.get(batch_id, False) or finished
                if batch is not None and finished:
                    log.info("batch finished batch_id=%s status=%s", batch_id, batch["status"])
                    work.finished.add(batch_id)
            elif isinstance(effect, ReleaseSlot):
                work.release.setdefault(batch_id, []).append(event.call_id)

    def flush_events(self, work: Gathered, *, place_here: bool = False) -> str | None:
        """Do the Redis work that applied events left, in one round of calls per batch: kick
        delivery first (placing a call here may take a provider round trip), renew the slots of
        live calls, give freed slots to the next calls (with `place_here`, the first of them in
        this task), and forget finished batches. Each piece leaves `work` once done: when one
        raises, what is left stays for the caller to flush again. Returns the call placed here."""
        for batch_id, urgent in list(work.kick.items()):
            self.kick_delivery(batch_id, urgent=urgent)
            del work.kick[batch_id]
        for batch_id, ids in list(work.renew.items()):
            self.gates.renew(batch_id, ids)
            del work.renew[batch_id]
        placed = None
        for batch_id in list(work.release):  # a call parked for a retry is released too
            here = self._dispatch(
                batch_id,
                work.release[batch_id],
                work.delay.get(batch_id),
                place_here=place_here and placed is None and batch_id not in work.finished,
            )[1]
            del work.release[batch_id]
            work.delay.pop(batch_id, None)
            placed = placed or here
        for batch_id in list(work.finished):
            self.gates.forget(batch_id)  # nothing of a finished batch stays in Redis
            work.finished.discard(batch_id)
        return placed
