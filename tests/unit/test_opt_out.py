"""Whether a callee's answer is the opt-out an input step declares, and what such a step may hold."""

from __future__ import annotations

from typing import Any

import pytest

from batchcalls.adapters.telephony.simulator import opt_out_answer, plan
from batchcalls.domain.opt_out import opts_out, problems
from batchcalls.domain.states import AttemptStatus, Outcome

STEP = {
    "type": "input",
    "dtmf": {"max_digits": 2},
    "speech": True,
    "opt_out": {"digits": "9", "phrases": ["stop calling", "Remove me"]},
}


def said(*texts: str) -> dict[str, Any]:
    return {"digits": None, "speech": [{"text": t, "confidence": 0.5} for t in texts]}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"digits": "9", "speech": []}, True),
        ({"digits": "9#", "speech": []}, True),  # the # that submitted them is not part of them
        ({"digits": "99", "speech": []}, False),
        ({"digits": "1", "speech": []}, False),
        ({"digits": None, "speech": []}, False),
        (said("Please STOP calling me!"), True),
        (said("remove... me, now"), True),
        (said("stop", "calling"), False),  # the words of a phrase come together, in one result
        (said("stopping calls"), False),  # whole words only
        (said("yes please", "please stop calling"), True),  # any result the recogniser offers
        (said("calling stop"), False),  # in order
    ],
)
def test_an_answer_opts_out_when_it_is_the_declared_digits_or_holds_a_phrase(
    response: dict[str, Any], expected: bool
) -> None:
    assert opts_out(STEP, response) is expected


def test_a_step_without_an_opt_out_never_opts_out() -> None:
    assert not opts_out({"type": "input", "dtmf": True}, {"digits": "9", "speech": []})


@pytest.mark.parametrize(
    ("opt_out", "expected"),
    [
        ({"digits": "9"}, {}),
        ({"digits": "*9#", "phrases": ["stop"]}, {}),
        ("9", {"opt_out": ['must be an object with "digits", "phrases" or both']}),
        ({}, {"opt_out": ['must be an object with "digits", "phrases" or both']}),
        ({"digits": ""}, {"opt_out.digits": ["must be 1 to 20 of the keys 0-9, * and #"]}),
        ({"digits": 9}, {"opt_out.digits": ["must be 1 to 20 of the keys 0-9, * and #"]}),
        ({"digits": "123"}, {"opt_out.digits": ["must be at most the step's dtmf.max_digits (2) keys long"]}),
        (
            {"phrases": ["!!!"]},
            {"opt_out.phrases": ["must be a list of 1 to 20 phrases of 1 to 100 characters, each with a word"]},
        ),
        (
            {"phrases": "stop"},
            {"opt_out.phrases": ["must be a list of 1 to 20 phrases of 1 to 100 characters, each with a word"]},
        ),
    ],
)
def test_what_an_opt_out_may_hold(opt_out: Any, expected: dict[str, list[str]]) -> None:
    assert problems({**STEP, "opt_out": opt_out}) == expected


def test_the_simulated_callee_of_a_number_ending_in_7_gives_the_first_opt_out() -> None:
    script = {
        "steps": [
            {"type": "text", "text": "Hi"},
            {"type": "input", "speech": True},
            {"type": "input", "speech": True, "opt_out": {"phrases": ["stop calling"]}},
            {"type": "input", "dtmf": True, "opt_out": {"digits": "9"}},
        ]
    }
    assert opt_out_answer("+442079440007", script) == (
        2,
        {"digits": None, "speech": [{"text": "stop calling", "confidence": 0.93}]},
    )
    assert opt_out_answer("+442079440000", script) is None
    assert opt_out_answer("+442079440007", {"steps": [{"type": "text", "text": "Hi"}]}) is None


def test_a_simulated_opt_out_ends_the_call_halfway_opted_out() -> None:
    assert plan("+442079440007", 1, 0.5, 2.0, opts_out=True) == [
        (0.0, AttemptStatus.RINGING, None),
        (0.5, AttemptStatus.ANSWERED, None),
        (1.5, AttemptStatus.ENDED, Outcome.OPTED_OUT),
    ]
    assert plan("+442079440007", 1, 0.5, 2.0)[-1] == (2.5, AttemptStatus.ENDED, Outcome.COMPLETED)
