"""The batch's `metadata` object: how deeply it may nest and how large it may be as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from marshmallow import ValidationError

MAX_METADATA_BYTES = 16 * 1024
# The metadata object itself is the first level.
MAX_METADATA_DEPTH = 8


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
    """Raises marshmallow's `ValidationError` for `metadata` too deep, too large, or not JSON."""
    # Depth first: measuring the size serialises the value, recursively.
    if nesting_depth(value, at_most=MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise ValidationError(f"Must nest objects and arrays at most {MAX_METADATA_DEPTH} deep.")
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError) as e:
        raise ValidationError("Must hold only JSON values.") from e
    if size > MAX_METADATA_BYTES:
        raise ValidationError(f"Must be at most {MAX_METADATA_BYTES} bytes as JSON (it has {size}).")
