"""Live progress of a batch in the terminal (rich), shared by `demo` and `submit --watch`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchcalls.domain.states import FINAL_BATCH_STATUSES, BatchStatus, CallStatus
from batchcalls.ops.client import Client


def _counts(status: dict[str, Any]) -> str:
    return (
        f"[green]{status['completed_calls']} completed[/] · [red]{status['failed_calls']} failed[/] · "
        f"[yellow]{status['in_progress']} in progress[/] · {status['pending']} pending"
        + (f" · [magenta]{status['cancelled_calls']} cancelled[/]" if status.get("cancelled_calls") else "")
    )


def watch(
    client: Client, batch_id: str, console: Console, on_tick: Callable[[], bool] | None = None, timeout: float = 3600
) -> dict[str, Any]:
    """Show a progress bar until the batch finishes (and `on_tick`, if given, returns True)."""
    status = client.status(batch_id, calls_limit=0)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(batch_id, total=status["total_calls"], counts=_counts(status))
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = client.status(batch_id, calls_limit=0)
            bar.update(
                task,
                completed=status["completed_calls"] + status["failed_calls"] + status.get("cancelled_calls", 0),
                counts=_counts(status),
            )
            ticked = on_tick() if on_tick else True
            # A cancelled batch is final when its live calls have ended too (`finished_at`).
            if status["status"] in FINAL_BATCH_STATUSES and status.get("finished_at") and ticked:
                return status
            time.sleep(0.25)
    raise TimeoutError(f"batch {batch_id} did not finish within {timeout:.0f}s")


def calls_table(calls: list[dict[str, Any]]) -> Table:
    table = Table(title="Calls")
    for column in ("phone number", "status", "outcome", "attempts", "voice"):
        table.add_column(column)
    colours = {
        CallStatus.COMPLETED.value: "green",
        CallStatus.FAILED.value: "red",
        CallStatus.CANCELLED.value: "magenta",
    }
    for call in calls:
        colour = colours.get(call["status"], "yellow")
        table.add_row(
            call["phone_number"],
            f"[{colour}]{call['status']}[/]",
            call.get("outcome") or "",
            " → ".join(a["outcome"] or "…" for a in call["attempts"]),
            call.get("voice_id") or "",
        )
    return table


def status_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"Batch {status['batch_id']}")
    table.add_column("field")
    table.add_column("value")
    colours = {
        BatchStatus.COMPLETED.value: "green",
        BatchStatus.FAILED.value: "red",
        BatchStatus.PAUSED.value: "yellow",
        BatchStatus.SCHEDULED.value: "cyan",
        BatchStatus.CANCELLED.value: "magenta",
    }
    state = str(status.get("status"))
    table.add_row("status", f"[{colours[state]}]{state}[/]" if state in colours else state)
    for key in (
        "total_calls",
        "completed_calls",
        "failed_calls",
        "cancelled_calls",
        "in_progress",
        "pending",
        "created_at",
        "start_at",
        "started_at",
        "finished_at",
        "expires_at",
    ):
        table.add_row(key, str(status.get(key)))
    return table
