"""A telephony twin that behaves like the phone network, driven by a number's last digit.

It sends its events through the same path as a real provider's webhooks (`record_event`), and
can answer `poll` from the clock alone, so a lost event is recovered like a lost webhook.

Its events fall due over the call (ringing at once, answered after the ring, the end after the
call) and so travel on countdowns; a lagging drain or countdown may apply them in any order.
That is safe because an attempt has exactly one ending and it carries the outcome: a machine is
the ending itself (`ended` with outcome `machine`), never a verdict followed by a separate
`completed` as on Vonage; a `ringing` or `answered` applied after the ending is a no-op in
`lifecycle.ATTEMPT_MOVES`, and one applied before it only moves the attempt forward.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from kombu.exceptions import KombuError

from batchcalls.adapters.logs import quoted
from batchcalls.adapters.telephony.base import DialRequest, LiveAttempt
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import AttemptStatus, Outcome
from batchcalls.domain.timefmt import isoformat_ms

log = logging.getLogger("batchcalls.simulator")

Step = tuple[float, AttemptStatus, Outcome | None]
Answer = tuple[int, dict[str, Any]]  # (input step, what the callee gave: digits or speech)

_UNANSWERED = {"1": Outcome.BUSY, "2": Outcome.NO_ANSWER, "3": Outcome.FAILED, "6": Outcome.REJECTED}
OPTS_OUT = "7"  # a number ending so answers, and gives the first opt-out its script declares


def opt_out_answer(phone_number: str, script: Mapping[str, Any]) -> Answer | None:
    """What the callee of a number ending in 7 gives: the digits (else the first phrase) of the
    first input step that declares an opt-out. None for other numbers and other scripts."""
    if not phone_number.endswith(OPTS_OUT):
        return None
    for index, step in enumerate(script.get("steps") or []):
        option = step.get("opt_out") if step.get("type") == "input" else None
        if isinstance(option, Mapping):
            if option.get("digits"):
                return index, {"digits": option["digits"], "speech": []}
            return index, {"digits": None, "speech": [{"text": option["phrases"][0], "confidence": 0.93}]}
    return None


def plan(
    phone_number: str, attempt: int, ring_seconds: float, call_seconds: float, *, opts_out: bool = False
) -> list[Step]:
    """The life of one simulated attempt: (seconds after dialing, status, outcome). A callee who
    opts out does so halfway through the call, which ends there (`opted_out`): whichever of the
    ending and the answer is applied first, the call ends opted out and the number is suppressed."""
    digit = phone_number[-1]
    outcome = _UNANSWERED.get(digit)
    if digit == "4" and attempt == 1:
        outcome = Outcome.BUSY
    steps: list[Step] = [(0.0, AttemptStatus.RINGING, None)]
    if outcome is not None:
        return [*steps, (ring_seconds, AttemptStatus.ENDED, outcome)]
    answered = Outcome.MACHINE if digit == "5" else Outcome.COMPLETED
    if opts_out:
        return [
            *steps,
            (ring_seconds, AttemptStatus.ANSWERED, None),
            (ring_seconds + call_seconds / 2, AttemptStatus.ENDED, Outcome.OPTED_OUT),
        ]
    return [
        *steps,
        (ring_seconds, AttemptStatus.ANSWERED, None),
        (ring_seconds + call_seconds, AttemptStatus.ENDED, answered),
    ]


@dataclass
class SimulatorProvider:
    """`schedule(event, delay_seconds)` delivers an event later through the webhook path.
    With `schedule_many(events, delay_seconds)`, the events of a call that fall due at the same
    instant (all three of a zero-length call) travel together, in order, as one message."""

    schedule: Callable[[ProviderEvent, float], None]
    ring_seconds: float = 0.5
    call_seconds: float = 2.0
    name: str = "simulator"
    # BATCHCALLS_SIM_LOG: one JSON line per call created (and hung up, and voicemail left), for audits
    log_path: str | None = None
    schedule_many: Callable[[list[ProviderEvent], float], None] | None = None
    # (call id, attempt, input step, responses, delay): the callee's answers, like an input webhook's
    send_input: Callable[[str, int, int, list[dict[str, Any]], float], None] | None = None

    def _events(
        self,
        call_id: str,
        attempt: int,
        phone: str,
        uuid_: str,
        start: float,
        *,
        opts_out: bool = False,
        voicemail: bool = False,
    ) -> list[ProviderEvent]:
        """The plan's events; with `voicemail`, a machine's ending says the message was left."""
        return [
            ProviderEvent(
                call_id,
                attempt,
                status,
                start + offset,
                outcome,
                uuid_,
                voicemail_left=voicemail and outcome is Outcome.MACHINE,
            )
            for offset, status, outcome in plan(phone, attempt, self.ring_seconds, self.call_seconds, opts_out=opts_out)
        ]

    def _answer(self, request: DialRequest, uuid_: str, answer: Answer, at: float) -> None:
        step, given = answer
        name = request.script["steps"][step].get("name")
        response = {
            "id": f"{uuid_}:{step}:{at}",
            "step": step,
            "name": name if isinstance(name, str) else None,
            "attempt": request.attempt,
            **given,
            "timed_out": False,
            "at": isoformat_ms(datetime.fromtimestamp(at, tz=UTC)),
        }
        assert self.send_input is not None
        self.send_input(request.call_id, request.attempt, step, [response], at - time.time())

    def create_call(self, request: DialRequest) -> str:
        provider_call_id = "sim-" + uuid.uuid4().hex
        start = time.time()
        if self.log_path:
            self._log(
                self.log_path,
                {
                    "call_id": request.call_id,
                    "attempt": request.attempt,
                    "at": start,
                    "phone_number": request.phone_number,
                    "uuid": provider_call_id,
                },
            )
        answer = opt_out_answer(request.phone_number, request.script) if self.send_input else None
        events = self._events(
            request.call_id,
            request.attempt,
            request.phone_number,
            provider_call_id,
            start,
            opts_out=answer is not None,
            voicemail=request.voicemail is not None,
        )
        if request.voicemail is not None and events[-1].voicemail_left:
            self._leave_voicemail(request, provider_call_id, events[-1].at)
        try:
            if answer is not None:
                self._answer(request, provider_call_id, answer, events[-1].at)
            if self.schedule_many is None:
                for event in events:
                    self.schedule(event, event.at - start)
            else:
                for _, due in itertools.groupby(events, key=lambda e: e.at):
                    together = list(due)
                    self.schedule_many(together, together[0].at - start)
        except (redis.RedisError, KombuError, OSError) as exc:
            # The call exists (it is in the log): its events are lost, as a provider's webhooks
            # can be, and the reconciler asks `poll`. Raised, the create would look unconfirmed,
            # and the call would end failed instead of as the network decided.
            log.warning(
                "simulator lost a call's events call_id=%s attempt=%d error=%s",
                request.call_id,
                request.attempt,
                quoted(exc),
            )
        return provider_call_id

    def poll(self, attempt: LiveAttempt) -> ProviderEvent | None:
        """The plan's last event reached. A callee who opts out is not known here (the script is
        not): a lost opt-out answer leaves the call ending as answered, as a lost webhook would."""
        if attempt.provider_call_id is None:
            return None
        events = self._events(
            attempt.call_id, attempt.attempt, attempt.phone_number, attempt.provider_call_id, attempt.dialed_at
        )
        reached = [e for e in events if e.at <= time.time()]
        return reached[-1] if reached else None

    def hangup(self, call_id: str, attempt: int, provider_call_id: str) -> None:
        """End the call now: its `ended` event (outcome `cancelled`) is sent at once, and the
        events its plan had still to send find the attempt ended (no-ops). Logged, beside the
        creates, in `<log_path>.hangups`."""
        now = time.time()
        if self.log_path:
            self._log(
                self.log_path + ".hangups",
                {"call_id": call_id, "attempt": attempt, "at": now, "uuid": provider_call_id},
            )
        self.schedule(ProviderEvent(call_id, attempt, AttemptStatus.ENDED, now, Outcome.CANCELLED, provider_call_id), 0)

    def _leave_voicemail(self, request: DialRequest, provider_call_id: str, at: float) -> None:
        """A machine number's call with a voicemail message: the machine beeps when its call
        would end, the message is left then (logged beside the creates, in `<log_path>.voicemails`)
        and the call ends `machine`, its attempt saying `voicemail_left`."""
        if self.log_path:
            self._log(
                self.log_path + ".voicemails",
                {
                    "call_id": request.call_id,
                    "attempt": request.attempt,
                    "at": at,
                    "phone_number": request.phone_number,
                    "uuid": provider_call_id,
                    "text": request.voicemail,
                },
            )

    def leave_voicemail(self, provider_call_id: str, text: str, voice_id: str | None) -> bool:
        """Never asked: the simulator leaves its messages when it plans the call (`create_call`)."""
        return False

    @staticmethod
    def _log(path: str, record: dict[str, object]) -> None:
        # One write of a short line to an O_APPEND file: lines from many processes never mix.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)
