"""`batchcalls results BATCH_ID [--format jsonl|csv]`: a batch's results export, streamed from the
API (BATCHCALLS_API_URL, BATCHCALLS_API_KEY) to stdout as it arrives, in constant memory."""

from __future__ import annotations

import sys

import click


@click.command()
@click.argument("batch_id")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True, help="Export format."
)
def results(batch_id: str, fmt: str) -> None:
    """Write every call of a batch (status, outcome, attempts, times, responses, metadata and
    variables) to stdout: one JSON line per call, or CSV with a header row."""
    from batchcalls.ops.cli import _client
    from batchcalls.ops.client import ApiError, Unreachable

    out = sys.stdout.buffer
    try:
        for chunk in _client().results(batch_id, fmt):
            out.write(chunk)
    except ApiError as exc:
        raise click.ClickException(f"{exc.status} {exc.code}: {exc.message}") from exc
    except Unreachable as exc:
        raise click.ClickException(str(exc)) from exc
    out.flush()
