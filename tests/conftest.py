from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import TestServers, test_servers


@pytest.fixture(scope="session")
def servers() -> Iterator[TestServers]:
    with test_servers() as found:
        yield found


@pytest.fixture(scope="session")
def stack(servers: TestServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.support.stack import start_stack

    running = start_stack(servers.database_url, servers.redis_url, Path(tmp_path_factory.mktemp("stack")))
    try:
        yield running
    finally:
        running.stop()
