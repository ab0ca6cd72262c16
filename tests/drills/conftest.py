from __future__ import annotations

from typing import Any

from tests.drills import harness


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show every drill's line of figures at the end of the run, even when output is captured."""
    if harness.REPORTED:
        terminalreporter.section("fault drills")
        for line in harness.REPORTED:
            terminalreporter.write_line(line)
