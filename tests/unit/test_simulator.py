"""The simulator: a number's last digit decides how each attempt goes (DESIGN §6)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from batchcalls.adapters.telephony import chaos as chaos_module
from batchcalls.adapters.telephony import simulator
from batchcalls.adapters.telephony.base import DialRequest, LiveAttempt
from batchcalls.adapters.telephony.chaos import Chaos, ChaoticSchedule
from batchcalls.adapters.telephony.simulator import SimulatorProvider, plan
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.states import AttemptStatus, Outcome

RINGING, ANSWERED, ENDED = AttemptStatus.RINGING, AttemptStatus.ANSWERED, AttemptStatus.ENDED
T0 = 1_700_000_000.0


def number(last_digit: str) -> str:
    return "+44207946011" + last_digit  # earlier digits (here a 1) never matter


def unanswered(outcome: Outcome, ring: float = 0.5) -> list[simulator.Step]:
    return [(0.0, RINGING, None), (ring, ENDED, outcome)]


def answered(outcome: Outcome, ring: float = 0.5, talk: float = 2.0) -> list[simulator.Step]:
    return [(0.0, RINGING, None), (ring, ANSWERED, None), (ring + talk, ENDED, outcome)]


# -- plan -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 5])
@pytest.mark.parametrize(
    ("digit", "expected"),
    [
        ("1", unanswered(Outcome.BUSY)),
        ("2", unanswered(Outcome.NO_ANSWER)),
        ("3", unanswered(Outcome.FAILED)),
        ("5", answered(Outcome.MACHINE)),
        ("6", unanswered(Outcome.REJECTED)),
        ("0", answered(Outcome.COMPLETED)),
        ("7", answered(Outcome.COMPLETED)),
        ("8", answered(Outcome.COMPLETED)),
        ("9", answered(Outcome.COMPLETED)),
    ],
)
def test_every_attempt_follows_the_last_digit(digit: str, expected: list[simulator.Step], attempt: int) -> None:
    assert plan(number(digit), attempt, 0.5, 2.0) == expected


def test_four_is_busy_on_the_first_attempt_and_answered_after() -> None:
    assert plan(number("4"), 1, 0.5, 2.0) == unanswered(Outcome.BUSY)
    assert plan(number("4"), 2, 0.5, 2.0) == answered(Outcome.COMPLETED)
    assert plan(number("4"), 3, 0.5, 2.0) == answered(Outcome.COMPLETED)


def test_ring_and_call_seconds_set_the_offsets() -> None:
    assert plan(number("0"), 1, 1.25, 7.0) == answered(Outcome.COMPLETED, ring=1.25, talk=7.0)
    assert plan(number("5"), 1, 0.1, 3.0) == answered(Outcome.MACHINE, ring=0.1, talk=3.0)
    assert plan(number("2"), 1, 4.0, 7.0) == unanswered(Outcome.NO_ANSWER, ring=4.0)  # ends when ringing ends


@pytest.mark.parametrize("digit", "0123456789")
@pytest.mark.parametrize("attempt", [1, 2])
def test_every_plan_rings_first_and_ends_once_with_an_outcome(digit: str, attempt: int) -> None:
    steps = plan(number(digit), attempt, 0.5, 2.0)
    assert steps[0] == (0.0, RINGING, None)
    offsets = [offset for offset, _, _ in steps]
    assert offsets == sorted(offsets)
    assert [status for _, status, _ in steps].count(ENDED) == 1
    assert steps[-1][1] == ENDED and steps[-1][2] is not None
    assert all(outcome is None for _, _, outcome in steps[:-1])


# -- SimulatorProvider ---------------------------------------------------------------------------


class Clock:
    """Stands in for the `time` module inside the simulator."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    frozen = Clock(T0)
    monkeypatch.setattr(simulator, "time", frozen)
    return frozen


class Scheduled:
    def __init__(self) -> None:
        self.calls: list[tuple[ProviderEvent, float]] = []

    def __call__(self, event: ProviderEvent, delay: float) -> None:
        self.calls.append((event, delay))


def request(phone: str, attempt: int = 1, call_id: str = "call-1") -> DialRequest:
    return DialRequest(call_id, attempt, phone, {"text": "Hello"}, None)


def test_create_call_schedules_each_event_after_its_offset(clock: Clock) -> None:
    scheduled = Scheduled()
    provider = SimulatorProvider(scheduled, ring_seconds=0.5, call_seconds=2.0)
    provider_call_id = provider.create_call(request(number("0"), attempt=3))
    assert provider_call_id.startswith("sim-")
    assert [(e.status, e.outcome, delay) for e, delay in scheduled.calls] == [
        (RINGING, None, 0.0),
        (ANSWERED, None, 0.5),
        (ENDED, Outcome.COMPLETED, 2.5),
    ]
    for event, delay in scheduled.calls:
        assert (event.call_id, event.attempt, event.provider_call_id) == ("call-1", 3, provider_call_id)
        assert event.at == T0 + delay


def test_an_unanswered_call_ends_when_ringing_ends(clock: Clock) -> None:
    scheduled = Scheduled()
    SimulatorProvider(scheduled, ring_seconds=1.5, call_seconds=9.0).create_call(request(number("6")))
    assert [(e.status, e.outcome, delay) for e, delay in scheduled.calls] == [
        (RINGING, None, 0.0),
        (ENDED, Outcome.REJECTED, 1.5),
    ]


def test_each_call_gets_its_own_provider_id(clock: Clock) -> None:
    provider = SimulatorProvider(Scheduled())
    ids = {provider.create_call(request(number("0"), call_id=f"c{i}")) for i in range(20)}
    assert len(ids) == 20


def test_create_call_logs_one_json_line_per_call(clock: Clock, tmp_path: Path) -> None:
    log_path = tmp_path / "sim.log"
    provider = SimulatorProvider(Scheduled(), log_path=str(log_path))
    first = provider.create_call(request(number("0"), attempt=1, call_id="a"))
    clock.now += 1.5
    second = provider.create_call(request(number("4"), attempt=2, call_id="b"))
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert lines == [
        {"call_id": "a", "attempt": 1, "at": T0, "phone_number": number("0"), "uuid": first},
        {"call_id": "b", "attempt": 2, "at": T0 + 1.5, "phone_number": number("4"), "uuid": second},
    ]


def test_a_call_whose_events_cannot_be_sent_is_still_created_and_polled(clock: Clock, tmp_path: Path) -> None:
    """Events the simulator cannot hand over (Redis restarting) are lost like webhooks: the
    create still answers, so the attempt is confirmed and `poll` tells where it stands."""

    def broker_down(event: ProviderEvent, delay: float) -> None:
        raise ConnectionError("Redis is restarting")

    log_path = tmp_path / "sim.log"
    provider = SimulatorProvider(broker_down, ring_seconds=0.5, call_seconds=2.0, log_path=str(log_path))
    provider_call_id = provider.create_call(request(number("0")))
    assert json.loads(log_path.read_text())["uuid"] == provider_call_id
    clock.now += 3.0
    live = LiveAttempt(
        call_id="call-1",
        attempt=1,
        phone_number=number("0"),
        status="dialing",
        provider_call_id=provider_call_id,
        dialed_at=T0,
    )
    polled = provider.poll(live)
    assert polled is not None and (polled.status, polled.outcome) == (ENDED, Outcome.COMPLETED)


def test_without_log_path_nothing_is_written(clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    SimulatorProvider(Scheduled()).create_call(request(number("0")))
    assert list(tmp_path.iterdir()) == []


# -- poll ---------------------------------------------------------------------------------------


def live(phone: str, attempt: int = 1, provider_call_id: str | None = "sim-x") -> LiveAttempt:
    return LiveAttempt("call-1", attempt, phone, "dialing", provider_call_id, T0)


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (-1.0, None),
        (0.0, (RINGING, None)),
        (0.49, (RINGING, None)),
        (0.5, (ANSWERED, None)),
        (2.49, (ANSWERED, None)),
        (2.5, (ENDED, Outcome.COMPLETED)),
        (3600.0, (ENDED, Outcome.COMPLETED)),
    ],
)
def test_poll_returns_the_latest_state_reached(
    clock: Clock, elapsed: float, expected: tuple[AttemptStatus, Outcome | None] | None
) -> None:
    clock.now = T0 + elapsed
    event = SimulatorProvider(Scheduled()).poll(live(number("0")))
    if expected is None:
        assert event is None
    else:
        assert event is not None
        assert (event.status, event.outcome) == expected
        assert (event.call_id, event.attempt, event.provider_call_id) == ("call-1", 1, "sim-x")


def test_poll_follows_the_attempt_number(clock: Clock) -> None:
    clock.now = T0 + 10
    provider = SimulatorProvider(Scheduled())
    first = provider.poll(live(number("4"), attempt=1))
    later = provider.poll(live(number("4"), attempt=2))
    assert first is not None and (first.status, first.outcome, first.at) == (ENDED, Outcome.BUSY, T0 + 0.5)
    assert later is not None and (later.status, later.outcome, later.at) == (ENDED, Outcome.COMPLETED, T0 + 2.5)


def test_poll_uses_the_providers_timing(clock: Clock) -> None:
    clock.now = T0 + 3.0
    event = SimulatorProvider(Scheduled(), ring_seconds=1.0, call_seconds=5.0).poll(live(number("5")))
    assert event is not None and (event.status, event.at) == (ANSWERED, T0 + 1.0)


def test_poll_without_a_provider_call_id_knows_nothing(clock: Clock) -> None:
    clock.now = T0 + 60
    assert SimulatorProvider(Scheduled()).poll(live(number("0"), provider_call_id=None)) is None


def test_poll_agrees_with_the_events_create_call_scheduled(clock: Clock) -> None:
    scheduled = Scheduled()
    provider = SimulatorProvider(scheduled)
    provider_call_id = provider.create_call(request(number("5"), attempt=2))
    attempt = LiveAttempt("call-1", 2, number("5"), "dialing", provider_call_id, T0)
    for event, delay in scheduled.calls:
        clock.now = T0 + delay
        assert provider.poll(attempt) == event


# -- chaos ----------------------------------------------------------------------------------------


def test_chaos_parses_its_shares_and_a_log_path_taken_verbatim() -> None:
    chaos = Chaos.parse("lose=0.1, duplicate=0.2,delay=0.15,reorder=0.25,delay_seconds=2,log=/tmp/a b,c=d.jsonl")
    assert chaos == Chaos(
        lose=0.1, duplicate=0.2, delay=0.15, reorder=0.25, delay_seconds=2.0, log="/tmp/a b,c=d.jsonl"
    )
    assert Chaos.parse("lose=0.5").log is None
    with pytest.raises(ValueError, match="unknown chaos setting"):
        Chaos.parse("lost=0.5")


def event(status: AttemptStatus = RINGING) -> ProviderEvent:
    return ProviderEvent("call-1", 2, status, T0)


@pytest.mark.parametrize(
    ("chaos", "did", "delays"),
    [
        (Chaos(lose=1.0), ["lost"], []),
        (Chaos(delay=1.0, delay_seconds=3.0), ["delayed"], [3.5]),
        (Chaos(reorder=1.0), ["reordered"], None),
        (Chaos(duplicate=1.0), ["duplicated"], None),
        (Chaos(delay=1.0, duplicate=1.0, delay_seconds=3.0), ["delayed", "duplicated"], None),
    ],
)
def test_chaos_records_each_thing_it_did_to_an_event(
    clock: Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chaos: Chaos,
    did: list[str],
    delays: list[float] | None,
) -> None:
    monkeypatch.setattr(chaos_module, "time", clock)
    log = tmp_path / "chaos.jsonl"
    scheduled = Scheduled()
    ChaoticSchedule(scheduled, Chaos(**{**chaos.__dict__, "log": str(log)}), random.Random(1))(event(), 0.5)
    if delays is not None:
        assert [delay for _, delay in scheduled.calls] == delays
    [line] = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["did"] == did and (line["call_id"], line["attempt"], line["status"]) == ("call-1", 2, "ringing")
    assert line["due"] == (None if did == ["lost"] else T0 + scheduled.calls[0][1])


def test_chaos_without_mischief_or_log_records_nothing(clock: Clock, tmp_path: Path) -> None:
    log = tmp_path / "chaos.jsonl"
    scheduled = Scheduled()
    ChaoticSchedule(scheduled, Chaos(log=str(log)))(event(), 0.5)
    ChaoticSchedule(scheduled, Chaos(lose=1.0))(event(), 0.5)
    assert scheduled.calls == [(event(), 0.5)] and not log.exists()
