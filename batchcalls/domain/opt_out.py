"""Opt-out during a call: what an input step's `opt_out` may hold, and whether an answer is one.

Pure functions over plain data, no I/O. An `input` step may declare
`"opt_out": {"digits": "9", "phrases": ["stop calling", "remove me"]}`: a callee who presses those
digits, or says one of those phrases, is added to the tenant's suppression list at once and the
call ends (US rules ask an automated opt-out to record the number and end the call at once).

`digits` need the step's `dtmf` and `phrases` its `speech`. Digits match when the callee pressed
exactly them (a `#` that submitted them is not part of them). A phrase matches when its words
appear together, in order, in any of the recogniser's results, whatever the case and punctuation:
"please STOP calling me!" holds "stop calling". When in doubt the number is suppressed, not called
again: every result the recogniser offers counts, not only its best.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

MAX_OPT_OUT_DIGITS = 20  # Vonage's largest maxDigits
MAX_PHRASES = 20
MAX_PHRASE_CHARS = 100
_DIGITS = re.compile(r"[0-9*#]+")
_WORD = re.compile(r"[^\W_]+")
FIELDS = frozenset({"digits", "phrases"})


def problems(step: Mapping[str, Any]) -> dict[str, list[str]]:
    """What is wrong with the `opt_out` of input step `step`, keyed by a path under the step
    ("opt_out", "opt_out.digits", "opt_out.phrases"). Empty when it is fine or absent."""
    if "opt_out" not in step:
        return {}
    value = step["opt_out"]
    if not isinstance(value, Mapping) or not value:
        return {"opt_out": ['must be an object with "digits", "phrases" or both']}
    found: dict[str, list[str]] = {}
    unknown = sorted(set(value) - FIELDS)
    if unknown:
        found["opt_out"] = [f"{name} is not an option; known: digits, phrases" for name in unknown]
    if "digits" in value:
        messages = _digits_problems(value["digits"], step.get("dtmf"))
        if messages:
            found["opt_out.digits"] = messages
    if "phrases" in value:
        messages = _phrases_problems(value["phrases"], step.get("speech"))
        if messages:
            found["opt_out.phrases"] = messages
    return found


def _digits_problems(digits: object, dtmf: object) -> list[str]:
    if type(digits) is not str or not _DIGITS.fullmatch(digits) or len(digits) > MAX_OPT_OUT_DIGITS:
        return [f"must be 1 to {MAX_OPT_OUT_DIGITS} of the keys 0-9, * and #"]
    if dtmf is None:
        return ["need the step to capture dtmf"]
    max_digits = dtmf.get("max_digits") if isinstance(dtmf, Mapping) else None
    if type(max_digits) is int and len(digits.rstrip("#")) > max_digits:
        return [f"must be at most the step's dtmf.max_digits ({max_digits}) keys long"]
    return []


def _phrases_problems(phrases: object, speech: object) -> list[str]:
    if (
        type(phrases) is not list
        or not phrases
        or len(phrases) > MAX_PHRASES
        or not all(type(p) is str and _words(p) and len(p) <= MAX_PHRASE_CHARS for p in phrases)
    ):
        return [f"must be a list of 1 to {MAX_PHRASES} phrases of 1 to {MAX_PHRASE_CHARS} characters, each with a word"]
    if speech is None:
        return ["need the step to capture speech"]
    return []


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.casefold() for word in _WORD.findall(text))


def _holds(said: Sequence[str], phrase: Sequence[str]) -> bool:
    size = len(phrase)
    return any(tuple(said[i : i + size]) == tuple(phrase) for i in range(len(said) - size + 1))


def opts_out(step: Mapping[str, Any], response: Mapping[str, Any]) -> bool:
    """Whether `response` (an input result as stored in a call's `responses`: `digits`, and
    `speech` as a list of `{"text", "confidence"}`) is the opt-out that `step` declares."""
    option = step.get("opt_out")
    if not isinstance(option, Mapping):
        return False
    digits = option.get("digits")
    pressed = response.get("digits")
    if isinstance(digits, str) and isinstance(pressed, str) and pressed.rstrip("#") == digits.rstrip("#"):
        return True
    phrases = [_words(p) for p in option.get("phrases") or [] if isinstance(p, str)]
    for result in response.get("speech") or []:
        text = result.get("text") if isinstance(result, Mapping) else None
        if isinstance(text, str) and any(_holds(_words(text), phrase) for phrase in phrases if phrase):
            return True
    return False
