"""A call's own data in a `POST /v1/batches` body: its `metadata` (limited as the batch's own
`metadata` is, by the same code) and its `variables` (judged by `batchcalls.domain.templates`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from marshmallow import ValidationError

from batchcalls.domain.templates import variables_problems

MAX_METADATA_BYTES = 16 * 1024
# The metadata object itself is the first level.
MAX_METADATA_DEPTH = 8
NOT_A_MAPPING = "Not a valid mapping type."  # marshmallow's wording

Problems = dict[str, Any]  # marshmallow's nested error messages: field -> messages


def nesting_depth(value: object, *, at_most: int) -> int:
    """How deeply objects and arrays nest in `value` (a scalar: 0, `{}` or `[]`: 1), counted
    without recursion and only up to `at_most + 1`: enough to say a value is too deep."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack and deepest <= at_most:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[object] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_metadata(value: dict[str, Any]) -> None:
    """Raise ValidationError when a `metadata` object nests too deeply or is too large as JSON."""
    # Depth first: measuring the size serialises the value, recursively.
    if nesting_depth(value, at_most=MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise ValidationError(f"Must nest objects and arrays at most {MAX_METADATA_DEPTH} deep.")
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError) as e:
        raise ValidationError("Must hold only JSON values.") from e
    if size > MAX_METADATA_BYTES:
        raise ValidationError(f"Must be at most {MAX_METADATA_BYTES} bytes as JSON (it has {size}).")


def call_data_problems(call: dict[str, Any]) -> Problems:
    """Problems of a call's `metadata` and `variables` (`calls[i].variables.<name>`), keyed as
    marshmallow keys a nested schema's."""
    problems: Problems = {}
    if "metadata" in call:
        if type(call["metadata"]) is not dict:
            problems["metadata"] = [NOT_A_MAPPING]
        else:
            try:
                check_metadata(call["metadata"])
            except ValidationError as e:
                problems["metadata"] = e.messages
    if "variables" in call:
        if type(call["variables"]) is not dict:
            problems["variables"] = [NOT_A_MAPPING]
        elif found := variables_problems(call["variables"]):
            problems["variables"] = {name or "_schema": messages for name, messages in found.items()}
    return problems
