"""Call scripts: what is wrong with one, and its normal form.

Pure functions over plain data, no I/O. A script arrives in one of two shapes:
`{"text": "..."}` (one text step) or `{"type": "sales_call", "steps": [{"text": "..."}, ...]}`,
and is stored and rendered in the normal form `{"type": str | None, "steps": [...]}` where every
step names its kind (`{"type": "text", "text": "..."}`).

Step kinds live in one table, `STEP_KINDS`: a new kind (`input`, `agent`) is one entry with its
fields and its check. What a step holds is judged here rather than by the request schema, so an
unknown step type or field is an `invalid_script` error, not a generic `invalid_request`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Vonage's talk action accepts at most 1,500 characters of text.
MAX_TEXT_CHARS = 1500

DEFAULT_STEP_TYPE = "text"

# Problems keyed by a path relative to the script: "" for the script itself, "text",
# "steps", "steps[2].text".
Problems = dict[str, list[str]]


def _text_problems(text: object) -> list[str]:
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
    problems = _text_problems(step["text"])
    return {"text": problems} if problems else {}


@dataclass(frozen=True)
class StepKind:
    """One kind of script step: the fields it may hold (besides `type`) and its check, which
    returns problems keyed by the step's own field names."""

    fields: frozenset[str]
    check: Callable[[Mapping[str, Any]], Problems]


STEP_KINDS: dict[str, StepKind] = {
    "text": StepKind(fields=frozenset({"text"}), check=_text_step_problems),
}


def _add(problems: Problems, path: str, messages: list[str]) -> None:
    if messages:
        problems.setdefault(path, []).extend(messages)


def _step_problems(step: object, prefix: str, problems: Problems) -> None:
    if not isinstance(step, Mapping):
        _add(problems, prefix, ["must be an object"])
        return
    step_type = step.get("type", DEFAULT_STEP_TYPE)
    kind = STEP_KINDS.get(step_type) if isinstance(step_type, str) else None
    if kind is None:
        known = ", ".join(sorted(STEP_KINDS))
        _add(problems, f"{prefix}.type", [f"unknown step type {step_type!r}; known: {known}"])
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
    has_text, has_steps = "text" in script, "steps" in script
    if has_text and has_steps:
        _add(problems, "", ["give either text or steps, not both"])
    elif has_text:
        _add(problems, "text", _text_problems(script["text"]))
    elif has_steps:
        steps = script["steps"]
        if not isinstance(steps, list):
            _add(problems, "steps", ["must be a list of steps"])
        elif not steps:
            _add(problems, "steps", ["must hold at least one step"])
        else:
            for index, step in enumerate(steps):
                _step_problems(step, f"steps[{index}]", problems)
    else:
        _add(problems, "", ["needs text or steps"])
    return problems


def script_problems(script: Mapping[str, Any]) -> list[str]:
    """Everything wrong with `script`, one message each, prefixed by where it is
    (`steps[0].text: must not be empty`). Empty when the script is fine."""
    return [
        f"{path}: {message}" if path else message
        for path, messages in script_problems_by_path(script).items()
        for message in messages
    ]


def normalize_script(script: Mapping[str, Any]) -> dict[str, Any]:
    """The normal form of a script that has no problems: `{"type": str | None, "steps": [...]}`,
    each step carrying its `type`. A bare `{"text": ...}` becomes one text step."""
    if "steps" in script:
        # A step's own "type" overrides the default.
        steps = [{"type": DEFAULT_STEP_TYPE, **step} for step in script["steps"]]
    else:
        steps = [{"type": DEFAULT_STEP_TYPE, "text": script["text"]}]
    return {"type": script.get("type"), "steps": steps}
