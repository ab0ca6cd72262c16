"""Call scripts: what is wrong with one, and its normal form.

Pure functions over plain data, no I/O. A script arrives in one of two shapes:
`{"text": "..."}` (one text step) or `{"type": "sales_call", "steps": [{"text": "..."}, ...]}`,
and is stored and rendered in the normal form `{"type": str | None, "steps": [...]}` where every
step names its kind (`{"type": "text", "text": "..."}`).

Step kinds live in one table, `STEP_KINDS`: `text` (spoken), `input` (DTMF and/or speech
captured as the call's responses; with `opt_out`, the answer that suppresses the number,
`batchcalls.domain.opt_out`) and `agent` (the call handed to a live voice agent over a
WebSocket); a new kind is one entry with its fields and its check. What a step holds is judged here rather than by the request schema, so an
unknown step type or field is an `invalid_script` error, not a generic `invalid_request`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchcalls.domain import opt_out

# Vonage's talk action accepts at most 1,500 characters of text.
MAX_TEXT_CHARS = 1500

DEFAULT_STEP_TYPE = "text"
# A script is a short conversation; each step is a Vonage NCCO action (at most 50 per call's NCCO
# here, well within what a call can play).
MAX_STEPS = 50
# A script's own `type` is a label ("sales_call") shown as each call's `script_type`.
MAX_SCRIPT_TYPE_CHARS = 64
# How much of an unknown step type an error message repeats.
SHOWN_TYPE_CHARS = 40

# Problems keyed by a path relative to the script: "" for the script itself, "text",
# "steps", "steps[2].text".
Problems = dict[str, list[str]]


def text_problems(text: object) -> list[str]:
    if not isinstance(text, str):
        return ["must be a string"]
    if not text.strip():
        return ["must not be empty"]
    if len(text) > MAX_TEXT_CHARS:
        return [f"must be at most {MAX_TEXT_CHARS} characters (it has {len(text)})"]
    return []


def _text_step_problems(step: Mapping[str, Any]) -> Problems:
    if "text" not in step:
        return {"text": ["is required"]}
    problems = text_problems(step["text"])
    return {"text": problems} if problems else {}


@dataclass(frozen=True)
class StepKind:
    """One kind of script step: the fields it may hold (besides `type`) and its check, which
    returns problems keyed by the step's own field names."""

    fields: frozenset[str]
    check: Callable[[Mapping[str, Any]], Problems]


# --- input: DTMF and/or speech capture, whose results become the call's responses ----------

# Each option: (check of the value, what it must be). Limits are Vonage's for the NCCO input.
_Option = tuple[Callable[[object], bool], str]


def _int_in(low: int, high: int) -> _Option:
    def check(value: object) -> bool:
        return type(value) is int and low <= value <= high  # type(): True is not a number here

    return check, f"must be a whole number from {low} to {high}"


def _number_in(low: float, high: float) -> _Option:
    def check(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high

    return check, f"must be a number from {low} to {high}"


_BOOLEAN: _Option = (lambda v: type(v) is bool, "must be true or false")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
MAX_HINTS = 100
MAX_HINT_CHARS = 100


def _hints(value: object) -> bool:
    return (
        type(value) is list
        and len(value) <= MAX_HINTS
        and all(type(h) is str and 0 < len(h) <= MAX_HINT_CHARS for h in value)
    )


DTMF_OPTIONS: dict[str, _Option] = {
    "max_digits": _int_in(1, 20),
    "timeout": _int_in(0, 10),
    "submit_on_hash": _BOOLEAN,
}
SPEECH_OPTIONS: dict[str, _Option] = {
    "language": (
        lambda v: type(v) is str and _LANGUAGE.fullmatch(v) is not None,
        "must be a BCP-47 language code such as en-US",
    ),
    "context": (_hints, f"must be a list of at most {MAX_HINTS} words or phrases of 1 to {MAX_HINT_CHARS} characters"),
    "end_on_silence": _number_in(0.4, 10.0),
    "start_timeout": _int_in(1, 60),
    "max_duration": _int_in(1, 60),
}
MAX_NAME_CHARS = 64


def _capture_problems(value: object, options: Mapping[str, _Option]) -> list[str]:
    """Problems of a `dtmf` or `speech` value: `true` (the defaults) or an object of options."""
    if value is True:
        return []
    if not isinstance(value, Mapping):
        return ["must be true or an object of options"]
    problems = []
    for name, option in value.items():
        if name not in options:
            problems.append(f"{name} is not an option; known: {', '.join(options)}")
        elif not options[name][0](option):
            problems.append(f"{name} {options[name][1]}")
    return problems


def _input_step_problems(step: Mapping[str, Any]) -> Problems:
    problems: Problems = {}
    if "dtmf" not in step and "speech" not in step:
        problems["dtmf"] = ["an input step needs dtmf, speech or both"]
    for name, options in (("dtmf", DTMF_OPTIONS), ("speech", SPEECH_OPTIONS)):
        if name in step:
            messages = _capture_problems(step[name], options)
            if messages:
                problems[name] = messages
    if "name" in step:
        name = step["name"]
        if type(name) is not str or not 0 < len(name.strip()) <= MAX_NAME_CHARS:
            problems["name"] = [f"must be a string of 1 to {MAX_NAME_CHARS} characters"]
    problems.update(opt_out.problems(step))
    return problems


# --- agent: the call is handed to a live AI voice agent over a WebSocket --------------------

MAX_URL_CHARS = 2048
MAX_HEADERS = 50
MAX_HEADER_VALUE_CHARS = 1024
_WEBSOCKET_URL = re.compile(r"wss?://[^\s/?#]+[^\s]*")


def _agent_step_problems(step: Mapping[str, Any]) -> Problems:
    problems: Problems = {}
    url = step.get("url")
    if "url" not in step:
        problems["url"] = ["is required"]
    elif type(url) is not str or len(url) > MAX_URL_CHARS or not _WEBSOCKET_URL.fullmatch(url):
        problems["url"] = [f"must be a ws:// or wss:// URL of at most {MAX_URL_CHARS} characters"]
    if "headers" in step:
        headers = step["headers"]
        scalar = (str, int, float, bool)
        if (
            not isinstance(headers, Mapping)
            or len(headers) > MAX_HEADERS
            or not all(type(k) is str and k and type(v) in scalar for k, v in headers.items())
            or any(type(v) is str and len(v) > MAX_HEADER_VALUE_CHARS for v in headers.values())
        ):
            problems["headers"] = [
                f"must be an object of at most {MAX_HEADERS} names with string, number or"
                f" boolean values (strings up to {MAX_HEADER_VALUE_CHARS} characters)"
            ]
    return problems


STEP_KINDS: dict[str, StepKind] = {
    "text": StepKind(fields=frozenset({"text"}), check=_text_step_problems),
    # {"type": "input", "dtmf": {...} | true, "speech": {...} | true, "name": "...",
    #  "opt_out": {"digits": "9", "phrases": [...]}}
    "input": StepKind(fields=frozenset({"dtmf", "speech", "name", "opt_out"}), check=_input_step_problems),
    # {"type": "agent", "url": "wss://...", "headers": {...}}
    "agent": StepKind(fields=frozenset({"url", "headers"}), check=_agent_step_problems),
}


def _add(problems: Problems, path: str, messages: list[str]) -> None:
    if messages:
        problems.setdefault(path, []).extend(messages)


def _shown(text: str) -> str:
    """`text` quoted for an error message, cut to its first SHOWN_TYPE_CHARS characters."""
    if len(text) <= SHOWN_TYPE_CHARS:
        return repr(text)
    return f"{text[:SHOWN_TYPE_CHARS]!r}... ({len(text)} characters)"


def _step_problems(step: object, prefix: str, problems: Problems) -> None:
    if not isinstance(step, Mapping):
        _add(problems, prefix, ["must be an object"])
        return
    step_type = step.get("type", DEFAULT_STEP_TYPE)
    known = ", ".join(sorted(STEP_KINDS))
    if not isinstance(step_type, str):
        # Never repeated back: it may be any JSON value, nested or large.
        _add(problems, f"{prefix}.type", [f"must be a string naming a step type; known: {known}"])
        return
    kind = STEP_KINDS.get(step_type)
    if kind is None:
        _add(problems, f"{prefix}.type", [f"unknown step type {_shown(step_type)}; known: {known}"])
        return
    for name in step:
        if name != "type" and name not in kind.fields:
            _add(problems, f"{prefix}.{name}", [f"is not a field of a {step_type} step"])
    for name, messages in kind.check(step).items():
        _add(problems, f"{prefix}.{name}", messages)


def script_problems_by_path(script: Mapping[str, Any]) -> Problems:
    """Everything wrong with `script` (as the request schema loaded it), keyed by a path
    relative to the script ("" for the script itself, "text", "steps[0].text"). Empty when the
    script is fine."""
    problems: Problems = {}
    script_type = script.get("type")
    if isinstance(script_type, str) and len(script_type) > MAX_SCRIPT_TYPE_CHARS:
        _add(problems, "type", [f"must be at most {MAX_SCRIPT_TYPE_CHARS} characters (it has {len(script_type)})"])
    has_text, has_steps = "text" in script, "steps" in script
    if has_text and has_steps:
        _add(problems, "", ["give either text or steps, not both"])
    elif has_text:
        _add(problems, "text", text_problems(script["text"]))
    elif has_steps:
        steps = script["steps"]
        if not isinstance(steps, list):
            _add(problems, "steps", ["must be a list of steps"])
        elif not steps:
            _add(problems, "steps", ["must hold at least one step"])
        elif len(steps) > MAX_STEPS:
            _add(problems, "steps", [f"must hold at most {MAX_STEPS} steps (it has {len(steps)})"])
        else:
            for index, step in enumerate(steps):
                _step_problems(step, f"steps[{index}]", problems)
    else:
        _add(problems, "", ["needs text or steps"])
    return problems


def normalize_script(script: Mapping[str, Any]) -> dict[str, Any]:
    """The normal form of a script that has no problems: `{"type": str | None, "steps": [...]}`,
    each step carrying its `type`. A bare `{"text": ...}` becomes one text step."""
    if "steps" in script:
        # A step's own "type" overrides the default.
        steps = [{"type": DEFAULT_STEP_TYPE, **step} for step in script["steps"]]
    else:
        steps = [{"type": DEFAULT_STEP_TYPE, "text": script["text"]}]
    return {"type": script.get("type"), "steps": steps}


def input_step(script: Mapping[str, Any], index: int) -> Mapping[str, Any] | None:
    """Step `index` of a normalised `script` when it is an input step, else None."""
    steps = script.get("steps") or []
    if 0 <= index < len(steps) and steps[index].get("type") == "input":
        step: Mapping[str, Any] = steps[index]
        return step
    return None
