"""A call's `variables` filled into its script's texts: `{{name}}` and `{{name|default}}`.

Pure, and plain substitution: a placeholder is found by one regular expression and replaced by
the variable's value as text; nothing in a template or a value is ever evaluated, looked up as
an attribute or expanded again. The grammar, whole:

- a placeholder is `{{`, optional whitespace, a name, optional whitespace, optionally `|` and a
  default (any text without `{` or `}`, its surrounding whitespace dropped), then `}}`;
- a name is letters, digits and underscores, not starting with a digit, at most
  `MAX_NAME_CHARS` (`first_name`, `_id`; `{{__class__}}` is a name like any other: without a
  variable of that name and without a default, it is a missing variable);
- anything else is literal text, spoken as written: `{{7*7}}`, `{{ x.__init__ }}`,
  `{% if x %}`, `${x}`, `{name}`;
- a value containing `{{other}}` is inserted as it is, never filled in turn.

A placeholder whose variable is absent takes its default (`{{name|}}`: nothing); without a
default it is a problem naming the variable. The filled text is then judged as literal text is
(`batchcalls.domain.scripts`), so its limits hold after filling.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from batchcalls.domain.scripts import script_problems_by_path

MAX_VARIABLES = 100
MAX_NAME_CHARS = 64
MAX_VALUE_CHARS = 1000

_NAME = rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_NAME_CHARS - 1}}}"
NAME = re.compile(_NAME)
PLACEHOLDER = re.compile(r"\{\{\s*(" + _NAME + r")\s*(?:\|([^{}]*))?\}\}")

Problems = dict[str, list[str]]
FILLED_NOTE = "after its variables were filled in"


def placeholders(text: str) -> list[tuple[str, str | None]]:
    """The placeholders of `text` in order, each as (name, default or None)."""
    return [(m[1], None if m[2] is None else m[2].strip()) for m in PLACEHOLDER.finditer(text)]


def as_text(value: object) -> str:
    """A variable's value as it is spoken: a string as it is, `true`/`false`, a number in JSON's
    spelling (`3`, `2.5`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def render(text: str, variables: Mapping[str, object]) -> tuple[str, list[str]]:
    """`text` with every placeholder replaced by its variable's value (`as_text`), or its default
    when the variable is absent; and the names of the variables that had neither, in order of
    first use (their placeholders stay in the text)."""
    if "{{" not in text:  # the common case, and what keeps a 100,000-call submit fast
        return text, []
    missing: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        if name in variables:
            return as_text(variables[name])
        if default is not None:
            return default.strip()
        if name not in missing:
            missing.append(name)
        return match[0]

    return PLACEHOLDER.sub(fill, text), missing


def variables_problems(variables: Mapping[str, object]) -> Problems:
    """What is wrong with a call's `variables` object, keyed by variable name ("" for the object
    itself): too many, a name that is not one, a value that is not a string, number or boolean or
    is too long. Empty when they are fine."""
    if len(variables) > MAX_VARIABLES:
        return {"": [f"must hold at most {MAX_VARIABLES} variables (it has {len(variables)})"]}
    problems: Problems = {}
    for name, value in variables.items():
        messages = []
        if not NAME.fullmatch(name):
            messages.append(
                f"is not a variable name: letters, digits and underscores, not starting with a digit,"
                f" at most {MAX_NAME_CHARS} characters"
            )
        if type(value) not in (str, int, float, bool):  # type(): a subclass is not JSON's
            messages.append("must be a string, a number or a boolean")
        elif isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            messages.append(f"must be at most {MAX_VALUE_CHARS} characters (it has {len(value)})")
        if messages:
            problems[name] = messages
    return problems


def _texts(script: Mapping[str, Any]) -> list[tuple[str, tuple[int | None, str]]]:
    """The script's texts that can hold placeholders: (path relative to the script, where it is:
    (step index or None for the script's own text, the text))."""
    found: list[tuple[str, tuple[int | None, str]]] = []
    if isinstance(script.get("text"), str):
        found.append(("text", (None, script["text"])))
    steps = script.get("steps")
    if isinstance(steps, list):
        for index, step in enumerate(steps):
            if isinstance(step, Mapping) and isinstance(step.get("text"), str):
                found.append((f"steps[{index}].text", (index, step["text"])))
    return found


def _noted(message: str) -> str:
    """A problem of a filled text, saying that it was measured after filling."""
    if message.endswith(")"):
        return f"{message[:-1]} {FILLED_NOTE})"
    return f"{message} ({FILLED_NOTE})"


def fill_script(script: Mapping[str, Any], variables: Mapping[str, object]) -> tuple[Mapping[str, Any], Problems]:
    """`script` (as the request schema loaded it) with `variables` filled into its texts (the
    script's `text` and each step's `text`), and everything wrong with it, keyed by a path relative
    to the script as `scripts.script_problems_by_path` keys them: the filled script's own problems,
    those of a text that filling changed saying so ("must be at most 1500 characters (it has 1612
    after its variables were filled in)"); for a text with a placeholder that has neither a
    variable nor a default, that instead (`has {{first_name}} but ...`). A script with nothing
    to fill is returned as it is."""
    missing: Problems = {}
    filled: dict[str, tuple[int | None, str]] = {}
    for path, (index, text) in _texts(script):
        rendered, names = render(text, variables)
        if names:
            missing[path] = [
                f"has {{{{{name}}}}} but the call has no variable {name!r} and the placeholder no default"
                for name in names
            ]
        if rendered != text:
            filled[path] = (index, rendered)
    result = _with_texts(script, filled.values()) if filled else script
    problems = script_problems_by_path(result)
    for path in problems.keys() & filled.keys():
        problems[path] = [_noted(m) for m in problems[path]]
    problems.update(missing)
    return result, problems


def _with_texts(script: Mapping[str, Any], texts: Iterable[tuple[int | None, str]]) -> dict[str, Any]:
    """A copy of `script` with the given texts (step index or None for its own, text) replaced."""
    result = dict(script)
    for index, text in texts:
        if index is None:
            result["text"] = text
        else:
            if result["steps"] is script["steps"]:
                result["steps"] = list(script["steps"])
            result["steps"][index] = {**result["steps"][index], "text": text}
    return result


def fill_scripts(calls: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], Problems]:
    """Each call's script with the call's `variables` filled in (`fill_script`), and every
    problem of them keyed by its path in the request (`calls[3].script.steps[0].text`)."""
    problems: Problems = {}
    scripts = []
    for index, call in enumerate(calls):
        prefix = f"calls[{index}].script"
        script, found = fill_script(call["script"], call.get("variables") or {})
        scripts.append(script)
        for path, messages in found.items():
            problems[f"{prefix}.{path}" if path else prefix] = messages
    return scripts, problems
