"""Network chaos for the simulator's events, for fault drills: lose, duplicate, delay and
reorder provider events the way a real provider's webhooks sometimes arrive.

`BATCHCALLS_SIM_CHAOS="lose=0.1,duplicate=0.2,delay=0.2,reorder=0.3,delay_seconds=3"`: each
share is the probability for one event; `delay_seconds` is how late a delayed event comes."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from batchcalls.models import ProviderEvent

Schedule = Callable[[ProviderEvent, float], None]


@dataclass(frozen=True)
class Chaos:
    lose: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    delay_seconds: float = 3.0

    @classmethod
    def parse(cls, text: str) -> Chaos:
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, raw = item.partition("=")
            if name not in cls.__dataclass_fields__:
                raise ValueError(f"unknown chaos setting {name!r}")
            values[name] = float(raw)
        return cls(**values)


@dataclass
class ChaoticSchedule:
    """Wraps the simulator's `schedule` and misbehaves like a network would."""

    schedule: Schedule
    chaos: Chaos
    rng: random.Random = field(default_factory=random.Random)

    def __call__(self, event: ProviderEvent, delay: float) -> None:
        if self.rng.random() < self.chaos.lose:
            return
        if self.rng.random() < self.chaos.delay:
            delay += self.chaos.delay_seconds
        elif self.rng.random() < self.chaos.reorder:
            delay += self.rng.uniform(0.2, 1.0)  # lands after the next event of the same call
        self.schedule(event, delay)
        if self.rng.random() < self.chaos.duplicate:
            self.schedule(event, delay + self.rng.uniform(0.0, 0.5))
