"""The engine's use cases: submit a batch, grant its calls free slots, place one call, apply a
provider event, and kick delivery. Postgres decides every state; Redis gates who may dial when.

Tasks call `Engine` and nothing else. Each job is a part of its own, read on its own:

- `submitting`: store a batch and queue its calls (`submit`);
- `granting`: give free slots to the next calls, and rebuild lost Redis state (`dispatch`, `rebuild`);
- `pacing`: under a calls-per-second limit, choose whose call is created at each instant (`pace`);
- `dialing`: place a call within the calls-per-second limit (`place_call`, `place_calls`);
- `events`: apply provider events and flush the Redis work they leave (`record_event(s)`, `flush_events`);
- `kicks`: have events delivered (`kick_delivery`, `deliver`, `redeliver`);
- `control`: pause, resume and cancel a batch, hang up its live calls, start a scheduled batch
  and expire one (`command`, `hang_up`, `start`, `expire`).

Redis is reached only through the gates adapter (and the delivery kicks'), its keys named in
`batchcalls.adapters.redis_keys`.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchcalls.adapters.gates import Gates
from batchcalls.adapters.metrics import Metrics
from batchcalls.adapters.store.db import Database
from batchcalls.adapters.telephony.base import Provider
from batchcalls.engine.base import TaskQueue
from batchcalls.engine.control import Controlling
from batchcalls.engine.dialing import Dialing
from batchcalls.engine.events import ApplyingEvents, Gathered
from batchcalls.engine.granting import EVENT_PRIORITY, Granting
from batchcalls.engine.kicks import DeliveryKicks
from batchcalls.engine.pacing import Pacing
from batchcalls.engine.submitting import Submitting, request_hash
from config.settings import Settings

__all__ = ["EVENT_PRIORITY", "Engine", "Gathered", "TaskQueue", "request_hash"]


@dataclass
class Engine(Submitting, Granting, Pacing, Dialing, ApplyingEvents, DeliveryKicks, Controlling):
    """The engine's parts over one set of adapters: the methods are the parts'."""

    settings: Settings
    db: Database
    gates: Gates
    tasks: TaskQueue
    provider: Provider | None = None
    metrics: Metrics | None = None
