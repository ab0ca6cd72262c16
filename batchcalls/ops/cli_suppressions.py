"""`batchcalls suppressions add | remove | list | import`: a tenant's numbers never to dial,
through the API (BATCHCALLS_API_URL, BATCHCALLS_API_KEY) as `submit` uses it."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from batchcalls.ops.client import Client

T = TypeVar("T")
CHUNK = 10_000  # the API's most numbers per request


def _client() -> Client:
    from batchcalls.ops.client import Client

    key = os.environ.get("BATCHCALLS_API_KEY")
    if not key:
        click.echo("BATCHCALLS_API_KEY is not set", err=True)
        sys.exit(2)
    return Client(os.environ.get("BATCHCALLS_API_URL", "http://127.0.0.1:8000"), key)


def _call(action: Callable[[], T]) -> T:
    from batchcalls.ops.client import ApiError, Unreachable

    try:
        return action()
    except ApiError as exc:
        for field, problems in (exc.details or {}).items() if isinstance(exc.details, dict) else ():
            click.echo(f"  {field}: {'; '.join(map(str, problems))}", err=True)
        raise click.ClickException(f"{exc.status} {exc.code}: {exc.message}") from exc
    except Unreachable as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def suppressions() -> None:
    """A tenant's suppression list: numbers its batches never dial."""


@suppressions.command("add")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--reason", help="Why, kept with each number.")
def add(numbers: tuple[str, ...], reason: str | None) -> None:
    """Suppress NUMBERS (international form, like +14155552671)."""
    answer = _call(lambda: _client().suppress(list(numbers), reason))
    click.echo(f"added {answer['added']}, already suppressed {answer['already_suppressed']}")


@suppressions.command("remove")
@click.argument("number")
def remove(number: str) -> None:
    """Dial NUMBER again."""
    _call(lambda: _client().unsuppress(number))
    click.echo(f"removed {number}")


@suppressions.command("list")
@click.option("--phone-number", help="Only this number (nothing printed when it is not suppressed).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def list_(phone_number: str | None, as_json: bool) -> None:
    """Print the suppressed numbers: number, added at, reason."""
    for row in _call(lambda: _client().suppressions(phone_number)):
        click.echo(json.dumps(row) if as_json else f"{row['phone_number']}\t{row['created_at']}\t{row['reason'] or ''}")


def numbers_from_csv(text: str) -> tuple[list[str], list[str]]:
    """The E.164 numbers of a CSV with a `phone_number` column (or one number a line, no header),
    and a problem per line that holds no valid number."""
    from batchcalls.domain.validation import normalize_phone_number

    rows = list(csv.reader(io.StringIO(text)))
    column, first = 0, 0
    if rows and "phone_number" in [cell.strip().lower() for cell in rows[0]]:
        column = [cell.strip().lower() for cell in rows[0]].index("phone_number")
        first = 1
    numbers: list[str] = []
    problems: list[str] = []
    for line, row in enumerate(rows[first:], start=first + 1):
        if not any(cell.strip() for cell in row):
            continue
        raw = row[column] if column < len(row) else ""
        number = normalize_phone_number(raw)
        if number is None:
            problems.append(f"line {line}: {raw!r} is not a valid number in international form (+14155552671)")
        else:
            numbers.append(number)
    return numbers, problems


@suppressions.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--reason", help="Why, kept with each number.")
def import_(file: str, reason: str | None) -> None:
    """Suppress every number of FILE.csv: a `phone_number` column, or one number a line. Every
    line is checked first: nothing is sent when one holds no valid number."""
    numbers, problems = numbers_from_csv(Path(file).read_text())
    for problem in problems:
        click.echo(f"{file}: {problem}", err=True)
    if problems:
        sys.exit(2)
    client = _client()
    totals: dict[str, Any] = {"added": 0, "already_suppressed": 0}
    for start in range(0, len(numbers), CHUNK):
        answer = _call(functools.partial(client.suppress, numbers[start : start + CHUNK], reason))
        for name in totals:
            totals[name] += answer[name]
    click.echo(f"added {totals['added']}, already suppressed {totals['already_suppressed']}")
