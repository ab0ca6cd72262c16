"""The layout is the architecture: each layer imports only the layers beneath it.

domain (pure, no I/O) <- adapters <- engine (use cases) <- api, workers, ops.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = {
    "redis",
    "psycopg2",
    "requests",
    "urllib3",
    "socket",
    "celery",
    "kombu",
    "flask",
    "vonage",
    "subprocess",
}
FORBIDDEN = {
    "batchcalls/domain": {
        "batchcalls.adapters",
        "batchcalls.engine",
        "batchcalls.ops",
        "api",
        "workers",
        *IO_LIBRARIES,
    },
    "batchcalls/adapters": {"batchcalls.engine", "batchcalls.ops", "api", "workers"},
    "batchcalls/engine": {"batchcalls.ops", "api", "workers"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _crossings(layer: str) -> dict[str, list[str]]:
    banned = FORBIDDEN[layer]
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        bad = sorted(name for name in _imports(path) if any(name == b or name.startswith(b + ".") for b in banned))
        if bad:
            found[path.relative_to(ROOT).as_posix()] = bad
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_the_layers_beneath_it(layer: str) -> None:
    assert _crossings(layer) == {}


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import redis\nfrom batchcalls.engine import Engine\n")
    assert _imports(module) == {"redis", "batchcalls.engine"}
