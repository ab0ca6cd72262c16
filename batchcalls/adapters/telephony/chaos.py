"""Network chaos for the simulator's events, for fault drills: lose, duplicate, delay and
reorder provider events the way a real provider's webhooks sometimes arrive.

`BATCHCALLS_SIM_CHAOS="lose=0.1,duplicate=0.2,delay=0.2,reorder=0.3,delay_seconds=3"`: each
share is the probability for one event; `delay_seconds` is how late a delayed event comes.
`log=PATH` (optional, last, as the path is taken verbatim) appends one JSON line to PATH for
each event the chaos misbehaved with, so a drill can show that it did: `{"call_id",
"attempt", "status", "did": ["lost" | "delayed" | "reordered" | "duplicated", ...], "due"}`
(`due`, Unix seconds, is when the event was sent to arrive; null when lost)."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from batchcalls.domain.models import ProviderEvent

Schedule = Callable[[ProviderEvent, float], None]


@dataclass(frozen=True)
class Chaos:
    lose: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    delay_seconds: float = 3.0
    log: str | None = None  # where to record what the chaos did (nothing recorded without it)

    @classmethod
    def parse(cls, text: str) -> Chaos:
        text, _, log = text.partition("log=")
        shares: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, raw = item.partition("=")
            if name not in cls.__dataclass_fields__ or name == "log":
                raise ValueError(f"unknown chaos setting {name!r}")
            shares[name] = float(raw)
        return cls(**shares, log=log.strip() or None)


@dataclass
class ChaoticSchedule:
    """Wraps the simulator's `schedule` and misbehaves like a network would."""

    schedule: Schedule
    chaos: Chaos
    rng: random.Random = field(default_factory=random.Random)

    def __call__(self, event: ProviderEvent, delay: float) -> None:
        if self.rng.random() < self.chaos.lose:
            self._record(event, ["lost"], None)
            return
        did: list[str] = []
        if self.rng.random() < self.chaos.delay:
            delay += self.chaos.delay_seconds
            did.append("delayed")
        elif self.rng.random() < self.chaos.reorder:
            delay += self.rng.uniform(0.2, 1.0)  # lands after the next event of the same call
            did.append("reordered")
        self.schedule(event, delay)
        if self.rng.random() < self.chaos.duplicate:
            self.schedule(event, delay + self.rng.uniform(0.0, 0.5))
            did.append("duplicated")
        if did:
            self._record(event, did, delay)

    def _record(self, event: ProviderEvent, did: list[str], delay: float | None) -> None:
        if self.chaos.log is None:
            return
        line = json.dumps(
            {
                "call_id": event.call_id,
                "attempt": event.attempt,
                "status": event.status.value,
                "did": did,
                "due": None if delay is None else time.time() + delay,
            }
        )
        # One write of a short line to an O_APPEND file: lines from many processes never mix.
        fd = os.open(self.chaos.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
