"""One line of the benchmark's table: a figure, its unit and its target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    scenario: str
    measure: str
    key: str
    unit: str
    target: str
    met: Callable[[float], bool] | None
