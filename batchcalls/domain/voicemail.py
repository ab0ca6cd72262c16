"""What a call does when a machine answers: `{"action": "hangup" | "leave_message", "text"}`, on
a batch or on a call (a call's replaces its batch's). Absent means `hangup`.

Pure. With `leave_message` the provider waits for the machine's beep and speaks `text`, which is
checked like a script's text, after the call's `variables` are filled into it as into its script
(`batchcalls.domain.templates`); the call's outcome stays `machine`, its attempt says
`voicemail_left`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batchcalls.domain.errors import InvalidRequest, InvalidScript
from batchcalls.domain.scripts import text_problems
from batchcalls.domain.templates import render

FIELD = "voicemail"
HANGUP = "hangup"
LEAVE_MESSAGE = "leave_message"
ACTIONS = (HANGUP, LEAVE_MESSAGE)

Voicemail = dict[str, str]  # {"action"} or {"action": "leave_message", "text"}


def _shape_problems(value: object) -> dict[str, list[str]]:
    if not isinstance(value, Mapping):
        return {"": ["must be an object"]}
    problems = {name: ["unknown field"] for name in value.keys() - {"action", "text"}}
    if value.get("action") not in ACTIONS:
        problems["action"] = [f"must be one of {', '.join(ACTIONS)}"]
    elif value["action"] == HANGUP and "text" in value:
        problems["text"] = ["is only for leave_message"]
    return problems


def _text_problems(value: Mapping[str, Any]) -> dict[str, list[str]]:
    if value["action"] != LEAVE_MESSAGE:
        return {}
    problems = text_problems(value["text"]) if "text" in value else ["is required with leave_message"]
    return {"text": problems} if problems else {}


def _named(prefix: str, problems: Mapping[str, list[str]]) -> dict[str, list[str]]:
    return {f"{prefix}.{path}" if path else prefix: messages for path, messages in problems.items()}


def requested_voicemails(
    data: Mapping[str, Any], calls: Sequence[Mapping[str, Any]]
) -> tuple[Voicemail | None, list[Voicemail | None]]:
    """The batch's voicemail and each call's own (None where not given), as plain dicts.

    Raises `InvalidRequest` for a bad shape (not an object, an unknown field or action) and then
    `InvalidScript` for a bad `text` (missing with `leave_message`, empty, too long), each naming
    every path (`voicemail.text`, `calls[2].voicemail.action`)."""
    given = [(FIELD, data[FIELD])] if FIELD in data else []
    given += [(f"calls[{i}].{FIELD}", call[FIELD]) for i, call in enumerate(calls) if FIELD in call]
    shape: dict[str, list[str]] = {}
    for prefix, value in given:
        shape.update(_named(prefix, _shape_problems(value)))
    if shape:
        first, messages = next(iter(shape.items()))
        raise InvalidRequest(f"invalid voicemail: {first}: {messages[0]}", shape)
    texts: dict[str, list[str]] = {}
    for prefix, value in given:
        texts.update(_named(prefix, _text_problems(value)))
    if texts:
        first, messages = next(iter(texts.items()))
        raise InvalidScript(f"invalid voicemail: {first}: {messages[0]}", texts)
    batch = dict(data[FIELD]) if FIELD in data else None
    own = [dict(call[FIELD]) if FIELD in call else None for call in calls]
    return batch, _filled(batch, own, calls)


def _filled(
    batch: Voicemail | None, own: list[Voicemail | None], calls: Sequence[Mapping[str, Any]]
) -> list[Voicemail | None]:
    """Each call's own voicemail with its `variables` filled into the text (its own, else its
    batch's, which becomes its own when filling changed it). Raises `InvalidScript` naming
    `calls[i].voicemail.text` for a placeholder with neither a variable nor a default, or a
    filled text over the limits."""
    if (batch is None or "{{" not in batch.get("text", "")) and all(
        v is None or "{{" not in v.get("text", "") for v in own
    ):
        return own  # nothing to fill: the common case, one look per call
    problems: dict[str, list[str]] = {}
    result = list(own)
    for index, (call, voicemail) in enumerate(zip(calls, own, strict=True)):
        template = voicemail if voicemail is not None else batch
        if template is None or message_of(template) is None:
            continue
        text, missing = render(template["text"], call.get("variables") or {})
        path = f"calls[{index}].voicemail.text"
        if missing:
            problems[path] = [
                f"has {{{{{name}}}}} but the call has no variable {name!r} and the placeholder no default"
                for name in missing
            ]
        elif text != template["text"]:
            if found := text_problems(text):
                problems[path] = [f"{m} (after its variables were filled in)" for m in found]
            result[index] = {"action": LEAVE_MESSAGE, "text": text}
    if problems:
        first, messages = next(iter(problems.items()))
        raise InvalidScript(f"invalid voicemail: {first}: {messages[0]}", problems)
    return result


def message_of(voicemail: Mapping[str, Any] | None) -> str | None:
    """The text to leave on a machine, or None when the call hangs up on one (the default)."""
    if voicemail is None or voicemail.get("action") != LEAVE_MESSAGE:
        return None
    text = voicemail.get("text")
    return text if isinstance(text, str) else None
