from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.drills import harness


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Note on the test whether its call failed, for fixtures that keep a failed drill's logs."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[harness.FAILED] = report.failed


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show every drill's line of figures at the end of the run, even when output is captured."""
    if harness.REPORTED:
        terminalreporter.section("fault drills")
        for line in harness.REPORTED:
            terminalreporter.write_line(line)
