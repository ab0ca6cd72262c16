"""The worker's consumer publishes task events at most every EVENT_FLUSH_SECONDS, and none is
left behind: not when a timer was dropped, not at shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from unittest import mock

from workers import consumer as consumer_mod
from workers.consumer import EVENT_FLUSH_SECONDS, STALE_FLUSH_SECONDS, Consumer


class FakeHub:
    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        self.timers.append((delay, lambda: callback(*args)))

    def fire(self) -> None:
        timers, self.timers = self.timers, []
        for _, callback in timers:
            callback()


def _consumer() -> tuple[Consumer, FakeHub, mock.Mock]:
    consumer = Consumer.__new__(Consumer)  # the parts these methods use, without a broker
    hub, dispatcher = FakeHub(), mock.Mock()
    consumer.hub, consumer.event_dispatcher = hub, dispatcher
    return consumer, hub, dispatcher


def test_a_burst_of_events_is_published_by_one_flush_after_the_interval() -> None:
    consumer, hub, dispatcher = _consumer()
    for _ in range(5):
        consumer.on_send_event_buffered()
    assert [delay for delay, _ in hub.timers] == [EVENT_FLUSH_SECONDS]
    dispatcher.flush.assert_not_called()
    hub.fire()
    dispatcher.flush.assert_called_once()
    consumer.on_send_event_buffered()  # the next event schedules the next flush
    assert len(hub.timers) == 1
    hub.fire()
    assert dispatcher.flush.call_count == 2


def test_a_flush_whose_timer_was_dropped_does_not_block_the_next(monkeypatch: Any) -> None:
    consumer, hub, dispatcher = _consumer()
    consumer.on_send_event_buffered()
    hub.timers.clear()  # the consumer restarted after losing the broker; its timers are gone
    later = time.monotonic() + STALE_FLUSH_SECONDS + EVENT_FLUSH_SECONDS
    monkeypatch.setattr(consumer_mod.time, "monotonic", lambda: later)
    consumer.on_send_event_buffered()
    assert len(hub.timers) == 1
    hub.fire()
    dispatcher.flush.assert_called_once()


def test_shutdown_publishes_what_is_buffered() -> None:
    consumer, hub, dispatcher = _consumer()
    consumer.on_send_event_buffered()
    with mock.patch("celery.worker.consumer.Consumer.shutdown") as celery_shutdown:
        consumer.shutdown()
    dispatcher.flush.assert_called_once_with(errors=False)
    celery_shutdown.assert_called_once()


def test_a_lost_connection_publishes_the_buffer_before_the_consumer_restarts() -> None:
    consumer, hub, dispatcher = _consumer()
    consumer.on_send_event_buffered()
    with mock.patch("celery.worker.consumer.Consumer.on_close") as celery_on_close:
        consumer.on_close()  # the restart then drops the loop's timers
    dispatcher.flush.assert_called_once_with(errors=False)
    celery_on_close.assert_called_once()
    consumer.on_send_event_buffered()  # the next event schedules a flush at once
    assert len(hub.timers) == 2
