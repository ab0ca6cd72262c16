"""Run one function at once in several fresh interpreters, like worker processes on separate
hosts, for the concurrency tests of the gates' Redis scripts and the relay's lock."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

SPAWN = multiprocessing.get_context("spawn")  # fresh interpreters: nothing inherited by fork


def run_processes(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], timeout: float
) -> list[tuple[Any, ...]]:
    """Run `target(*a, start, results)` in one process per `a`; `start` is a barrier they pass
    together (after their imports), and each puts one answer on `results`: ("ok", ...) or
    ("error", traceback). Fails on any error; returns the answers in the order they came."""
    start = SPAWN.Barrier(len(args), timeout=30)
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*a, start, results), daemon=True) for a in args]
    for proc in procs:
        proc.start()
    try:
        answers = [results.get(timeout=timeout) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    errors = [a[1] for a in answers if a[0] != "ok"]
    assert not errors, "\n".join(errors)
    return answers
