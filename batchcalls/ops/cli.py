"""The `batchcalls` command."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchcalls.ops import cli_policy  # noqa: F401 - registers `keys policy`
from batchcalls.ops.cli_admin import db, keys, webhook_secret
from batchcalls.ops.cli_results import results
from batchcalls.ops.cli_suppressions import suppressions

if TYPE_CHECKING:
    from batchcalls.ops.client import Client


@click.group()
def main() -> None:
    """Batchcalls: place AI voice calls in bulk."""


main.add_command(db)
main.add_command(keys)
main.add_command(webhook_secret)
main.add_command(suppressions)
main.add_command(results)


@main.command()
@click.option("--port", type=int, default=8000, show_default=True, help="Port of the API on 127.0.0.1.")
@click.option("--workers", type=int, default=2, show_default=True, help="Celery worker processes.")
@click.option("--flower", is_flag=True, help="Also run Flower.")
def up(port: int, workers: int, flower: bool) -> None:
    """Run migrations, the API, workers, beat (and Flower) on this machine until Ctrl-C.

    Uses DATABASE_URL and REDIS_URL when set, else embedded PostgreSQL and Redis servers under
    BATCHCALLS_DATA_DIR."""
    from batchcalls.ops.supervisor import FLOWER_USER, Stopped, run_system

    try:
        with run_system(port=port, workers=workers, flower=flower) as system:
            click.echo(f"Batchcalls API listening on {system.api_url}")
            click.echo(f"API key (tenant dev): {system.api_key}")
            click.echo(f"Webhook secret (tenant dev): {system.webhook_secret}")
            click.echo(f"Dashboard: {system.api_url}/dashboard (sign in with the API key)")
            if system.flower_url:
                auth = (
                    f"user {FLOWER_USER}, password {system.flower_password}: made up for this run, "
                    "as FLOWER_BASIC_AUTH is unset"
                    if system.flower_password
                    else "user and password from FLOWER_BASIC_AUTH"
                )
                click.echo(f"Flower: {system.flower_url} ({auth})")
            click.echo(f"Logs: {system.log_dir}   Stop with Ctrl-C.")
            while True:
                dead = system.dead_children()
                if dead:
                    raise click.ClickException(f"{', '.join(dead)} stopped; see {system.log_dir}")
                time.sleep(0.5)
    except (KeyboardInterrupt, Stopped):
        click.echo("stopped")


@main.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--timeout", type=float, default=120, show_default=True, help="Give up after this many seconds.")
@click.option("--stay", is_flag=True, help="Keep everything running after the final event, until Ctrl-C.")
def demo(file: str | None, timeout: float, stay: bool) -> None:
    """Run everything, submit an example batch (or FILE) and watch it until its final event."""
    from contextlib import ExitStack

    from rich.console import Console

    from batchcalls.ops.client import Client
    from batchcalls.ops.demo_receiver import LocalReceiver
    from batchcalls.ops.progress import calls_table, status_table, watch
    from batchcalls.ops.supervisor import Stopped, free_port, run_system

    console = Console()
    body = json.loads(Path(file).read_text() if file else _example("advanced.json"))
    demo_env = {"BATCHCALLS_ALLOW_HTTP_CALLBACKS": "1", "BATCHCALLS_CALLBACK_ALLOWLIST": "127.0.0.1"}
    terminal = {"batch.completed", "batch.failed", "batch.cancelled"}
    seen: list[str] = []
    try:
        with ExitStack() as stack:
            with console.status("starting PostgreSQL, Redis, the API, two workers, a delivery worker and beat…"):
                system = stack.enter_context(run_system(port=free_port(), workers=2, extra_env=demo_env))
            console.print(f"Batchcalls API listening on {system.api_url}")
            console.print(f"Dashboard: {system.api_url}/dashboard (sign in with the API key)")
            console.print(f"API key (tenant dev): {system.api_key}", soft_wrap=True)
            receiver = LocalReceiver(system.webhook_secret)
            stack.callback(receiver.stop)
            body.setdefault("callback_url", receiver.url)
            client = Client(system.api_url, system.api_key)
            batch = client.submit(body)
            console.print(
                f"submitted {batch['batch_id']}: {batch['total_calls']} calls, "
                f"concurrency {body.get('concurrency', 10)}; events go to {receiver.url}"
            )

            def print_events() -> bool:
                for event, verified in receiver.drain():
                    seen.append(event["type"])
                    data = event["data"]
                    about = (
                        f"{data['phone_number']} {data['outcome']} after {len(data['attempts'])} attempt(s)"
                        if "phone_number" in data
                        else f"{data['completed_calls']} completed, {data['failed_calls']} failed"
                    )
                    mark = "[green]signature ok[/]" if verified else "[red]BAD SIGNATURE[/]"
                    console.print(f"  event {event['type']:<22} {about}  ({mark})")
                return bool(terminal & set(seen))

            status = watch(client, batch["batch_id"], console, on_tick=print_events, timeout=timeout)
            console.print(calls_table(client.calls(batch["batch_id"])))
            console.print(status_table(status))
            if not stay:
                console.print(f"[bold]{status['status']}[/]: final event {seen[-1]} received; stopping.")
                return
            console.print(f"[bold]{status['status']}[/]: final event {seen[-1]} received; the dashboard stays up.")
            console.print("Stop with Ctrl-C.")
            while not system.dead_children():
                time.sleep(0.5)
            raise click.ClickException(f"{', '.join(system.dead_children())} stopped; see {system.log_dir}")
    except (KeyboardInterrupt, Stopped):
        sys.exit(130)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from exc


def _example(name: str) -> str:
    from importlib import resources

    return resources.files("batchcalls.ops").joinpath("examples", name).read_text()


def _client() -> Client:
    from batchcalls.ops.client import Client

    url = os.environ.get("BATCHCALLS_API_URL", "http://127.0.0.1:8000")
    return Client(url, _require("BATCHCALLS_API_KEY"))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--text", "default_text", help="Script text for CSV rows without a text column.")
@click.option("--voice", "default_voice", help="voice_id for CSV rows without one.")
@click.option("--concurrency", type=int, help="Batch concurrency (CSV input).")
@click.option("--callback-url", help="Where batch events go (CSV input).")
@click.option("--idempotency-key", help="Makes a retried submit return the first batch.")
@click.option("--watch", "watch_it", is_flag=True, help="Show progress until the batch finishes.")
def submit(
    file: str,
    default_text: str | None,
    default_voice: str | None,
    concurrency: int | None,
    callback_url: str | None,
    idempotency_key: str | None,
    watch_it: bool,
) -> None:
    """Submit a batch from FILE: the JSON body, or a CSV with a phone_number column and optional
    text, voice_id and priority columns. Uses BATCHCALLS_API_URL and BATCHCALLS_API_KEY."""
    from rich.console import Console

    from batchcalls.ops.client import ApiError, Unreachable
    from batchcalls.ops.csvinput import CsvProblems, calls_from_csv, describe_api_details
    from batchcalls.ops.progress import status_table, watch

    text = Path(file).read_text()
    from_csv = file.lower().endswith(".csv")
    if from_csv:
        try:
            body: dict[str, Any] = {"calls": calls_from_csv(text, default_text, default_voice)}
        except CsvProblems as exc:
            for problem in exc.problems:
                click.echo(f"{file}: {problem}", err=True)
            sys.exit(2)
    else:
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise click.ClickException(f"{file} is not valid JSON: {exc}") from exc
    if concurrency is not None:
        body["concurrency"] = concurrency
    if callback_url is not None:
        body["callback_url"] = callback_url
    client = _client()
    try:
        batch = client.submit(body, idempotency_key)
    except ApiError as exc:
        click.echo(f"rejected ({exc.status} {exc.code}): {exc.message}", err=True)
        for line in describe_api_details(exc.details, from_csv=from_csv):
            click.echo(f"  {file}: {line}", err=True)
        sys.exit(1)
    except Unreachable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(batch["batch_id"])
    if watch_it:
        console = Console(stderr=True)
        try:
            status = watch(client, batch["batch_id"], console)
        except (ApiError, Unreachable) as exc:
            raise click.ClickException(f"watching {batch['batch_id']}: {exc}") from exc
        console.print(status_table(status))


@main.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status body as JSON.")
def status(batch_id: str, as_json: bool) -> None:
    """Show a batch's status."""
    from rich.console import Console

    from batchcalls.ops.client import ApiError, Unreachable
    from batchcalls.ops.progress import status_table

    try:
        body = _client().status(batch_id)
    except ApiError as exc:
        raise click.ClickException(f"{exc.status} {exc.code}: {exc.message}") from exc
    except Unreachable as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        Console().print(status_table(body))


def _command(batch_id: str, command: str, body: dict[str, Any] | None = None) -> None:
    from rich.console import Console

    from batchcalls.ops.client import ApiError, Unreachable
    from batchcalls.ops.progress import status_table

    try:
        answer = _client().command(batch_id, command, body)
    except ApiError as exc:
        raise click.ClickException(f"{exc.status} {exc.code}: {exc.message}") from exc
    except Unreachable as exc:
        raise click.ClickException(str(exc)) from exc
    Console().print(status_table(answer))


@main.command()
@click.argument("batch_id")
def pause(batch_id: str) -> None:
    """Pause a batch: no call of it is dialed until it is resumed; live calls end normally."""
    _command(batch_id, "pause")


@main.command()
@click.argument("batch_id")
def resume(batch_id: str) -> None:
    """Resume a paused batch under the same concurrency."""
    _command(batch_id, "resume")


@main.command()
@click.argument("batch_id")
@click.option("--hangup", is_flag=True, help="Also hang up the batch's live calls (else they finish).")
def cancel(batch_id: str, hangup: bool) -> None:
    """Cancel a batch: its calls not yet dialed end cancelled."""
    _command(batch_id, "cancel", {"hangup_live_calls": True} if hangup else None)


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        click.echo(f"{name} is not set", err=True)
        sys.exit(2)
    return value


if __name__ == "__main__":
    main()
