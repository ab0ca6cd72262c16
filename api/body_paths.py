"""Paths of fields in a request body (`calls[3].script.text`) as error details name them, and the
check that every string in a body can be stored."""

from __future__ import annotations

import re
from typing import Any

from batchcalls.domain.errors import InvalidRequest


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error messages as `{"calls[3].script.text": [...]}`.

    Integer keys are list indexes, `_schema` is the object itself, and an error on the body
    itself is named `body`.
    """
    flat: dict[str, list[str]] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                if isinstance(key, int):
                    walk(child, f"{path}[{key}]")
                elif key == "_schema":
                    walk(child, path)
                else:
                    walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, (dict, list)):
                    walk(item, path)
                else:
                    flat.setdefault(path or "body", []).append(str(item))
        else:
            flat.setdefault(path or "body", []).append(str(node))

    walk(messages, prefix)
    return flat


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_TEXT = "Must not contain NUL characters or unpaired surrogates."
UNSTORABLE_KEY = "Must not hold a key that contains NUL characters or unpaired surrogates."


def _natural(path: str) -> list[Any]:
    """Sort key putting calls[2] before calls[10]."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def check_storable_text(body: object) -> None:
    """Raise `InvalidRequest` naming every string (or object key) in the parsed body that
    PostgreSQL cannot store: one holding a NUL character or an unpaired surrogate, both of
    which JSON can spell with \\u escapes. Iterative: a deeply nested body is no problem."""
    problems: dict[str, list[str]] = {}
    stack: list[tuple[object, str]] = [(body, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _UNSTORABLE.search(node):
                problems[path or "body"] = [UNSTORABLE_TEXT]
        elif isinstance(node, dict):
            for key, value in node.items():
                if _UNSTORABLE.search(key):
                    problems[path or "body"] = [UNSTORABLE_KEY]
                else:
                    stack.append((value, f"{path}.{key}" if path else key))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(node))
    if problems:
        details = {path: problems[path] for path in sorted(problems, key=_natural)}
        path = next(iter(details))
        raise InvalidRequest(f"Invalid request: {path}: {details[path][0]}", details)
