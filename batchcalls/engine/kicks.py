"""Delivery kicks: have a batch's new events delivered by the relay running for it, or by a
`deliver` task, and run that task."""

from __future__ import annotations

import functools

from batchcalls.adapters.delivery.kicks import Kicks
from batchcalls.adapters.delivery.relay import Relay
from batchcalls.engine.base import EngineParts

# Events are delivered within about this long of their change, many calls' to one relay run.
DELIVERY_GATHER_SECONDS = 0.2


class DeliveryKicks(EngineParts):
    @functools.cached_property
    def _kicks(self) -> Kicks:
        return Kicks(self.settings, self.gates.redis)

    def kick_delivery(self, batch_id: str, *, urgent: bool = False) -> None:
        """Have the batch's new events delivered: by the relay already running or queued for the
        batch, else by a new `deliver` task. That task starts DELIVERY_GATHER_SECONDS later, so
        that one relay takes the events of many calls ending close together; an `urgent` kick
        (the batch's last events) starts one at once."""
        if self._kicks.needs_task(batch_id, urgent=urgent):
            self.tasks.deliver(batch_id, countdown=0 if urgent else DELIVERY_GATHER_SECONDS)

    def delivery_starting(self, batch_id: str) -> None:
        """A `deliver` task begins: events written from now on need a relay of their own."""
        self._kicks.task_starting(batch_id)

    def deliver(self, relay: Relay, batch_id: str) -> int:
        """A `deliver` task: run the batch's relay, and have it run again when it asks to be
        (unless another retry of the batch is scheduled already); the events delivered."""
        self.delivery_starting(batch_id)
        outcome = relay.run(batch_id)
        if outcome.retry_in is not None:
            countdown = min(outcome.retry_in, self.settings.max_countdown_seconds)
            if self._kicks.retry_scheduled(batch_id, countdown):
                self.tasks.deliver(batch_id, countdown=countdown)
        return outcome.delivered

    def redeliver(self, batch_id: str) -> bool:
        """The sweep's kick for a batch with due events: a `deliver` task now, unless a relay
        runs it, a task is queued for it or a retry is scheduled (each mark expires by itself,
        so a lost task is sent again by a later sweep). True when a task was sent."""
        if not self._kicks.needs_task(batch_id):
            return False
        self.tasks.deliver(batch_id)
        return True
