"""The `batchcalls db`, `keys` and `webhook-secret` commands: administration against the database."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import click

R = TypeVar("R")


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations not yet applied."""
    from batchcalls.adapters.store.migrate import upgrade

    with _database_url() as url:
        applied = upgrade(url)
    click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")


@click.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name; created if new.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_create(tenant: str, as_json: bool) -> None:
    """Create an API key (and the tenant, if new)."""
    from batchcalls.adapters.store.db import Database
    from batchcalls.adapters.store.tenants import create_key

    with _database_url() as url:
        tenant_row, api_key = create_key(Database(url), tenant)
    result = {"tenant": tenant_row.name, "api_key": api_key, "webhook_secret": tenant_row.webhook_secrets[0]}
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key}: {value}")


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    from batchcalls.domain.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


_OVERLAP = click.option(
    "--overlap",
    default="24h",
    show_default=True,
    callback=_duration,
    metavar="DURATION",
    help="How long the previous ones stay valid (e.g. 24h, 90m, 0 for none).",
)


def _json_or_lines(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key}: {'-' if value is None else value}")


@keys.command("list")
@click.option("--tenant", help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(tenant: str | None, as_json: bool) -> None:
    """List API keys: id, prefix, tenant, status and times (never the key itself)."""
    from batchcalls.adapters.store.db import Database
    from batchcalls.adapters.store.keys import list_keys
    from batchcalls.domain.errors import BatchcallsError
    from batchcalls.domain.timefmt import isoformat_ms

    with _database_url() as url:
        try:
            found = list_keys(Database(url), tenant)
        except BatchcallsError as exc:
            raise click.ClickException(exc.message) from exc
    rows = [
        {
            "id": k.id,
            "prefix": k.prefix,
            "tenant": k.tenant,
            "status": k.status,
            "created_at": isoformat_ms(k.created_at),
            "last_used_at": isoformat_ms(k.last_used_at),
            "expires_at": isoformat_ms(k.expires_at),
            "revoked_at": isoformat_ms(k.revoked_at),
        }
        for k in found
    ]
    if as_json:
        click.echo(json.dumps({"keys": rows}))
        return
    columns = ["id", "prefix", "tenant", "status", "created_at", "last_used_at", "expires_at", "revoked_at"]
    table = [columns] + [["-" if row[c] is None else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@keys.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    """Revoke KEY (an id or prefix as `keys list` shows it, or the key itself): it stops
    authenticating at once."""
    from batchcalls.adapters.store.db import Database
    from batchcalls.adapters.store.keys import revoke_key
    from batchcalls.domain.errors import BatchcallsError
    from batchcalls.domain.timefmt import isoformat_ms

    with _database_url() as url:
        try:
            info, revoked_now = revoke_key(Database(url), key)
        except BatchcallsError as exc:
            raise click.ClickException(exc.message) from exc
    about = f"key {info.id} ({info.prefix}, tenant {info.tenant})"
    click.echo(f"revoked {about}" if revoked_now else f"{about} was already revoked at {isoformat_ms(info.revoked_at)}")


def _rotate(rotate: Callable[..., R], tenant: str, overlap: timedelta) -> R:
    """Run a rotation on the database, a domain error as the command's error."""
    from batchcalls.adapters.store.db import Database
    from batchcalls.domain.errors import BatchcallsError

    with _database_url() as url:
        try:
            return rotate(Database(url), tenant, overlap=overlap)
        except BatchcallsError as exc:
            raise click.ClickException(exc.message) from exc


@keys.command("rotate")
@click.option("--tenant", required=True, help="The tenant whose keys are rotated.")
@_OVERLAP
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_rotate(tenant: str, overlap: timedelta, as_json: bool) -> None:
    """Make a new API key for TENANT; its previous keys stop working when the overlap ends."""
    from batchcalls.adapters.store.keys import rotate_key
    from batchcalls.domain.timefmt import isoformat_ms

    rotated = _rotate(rotate_key, tenant, overlap)
    _json_or_lines(
        {
            "tenant": rotated.tenant,
            "api_key": rotated.new,
            "key_id": rotated.key_id,
            "previous_keys_valid_until": isoformat_ms(rotated.old_valid_until),
        },
        as_json=as_json,
    )


@click.group("webhook-secret")
def webhook_secret() -> None:
    """Webhook signing secrets."""


@webhook_secret.command("rotate")
@click.option("--tenant", required=True, help="The tenant whose secret is rotated.")
@_OVERLAP
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_secret_rotate(tenant: str, overlap: timedelta, as_json: bool) -> None:
    """Make a new webhook secret for TENANT. Events are signed with it at once, and also with the
    previous secret until the overlap ends (one signature per secret in each header)."""
    from batchcalls.adapters.store.keys import rotate_webhook_secret
    from batchcalls.domain.timefmt import isoformat_ms

    rotated = _rotate(rotate_webhook_secret, tenant, overlap)
    _json_or_lines(
        {
            "tenant": rotated.tenant,
            "webhook_secret": rotated.new,
            "previous_secrets_valid_until": isoformat_ms(rotated.old_valid_until),
        },
        as_json=as_json,
    )


@contextlib.contextmanager
def _database_url() -> Iterator[str]:
    """DATABASE_URL when set; else the embedded PostgreSQL under BATCHCALLS_DATA_DIR (the one
    `up` uses: attached to when it runs, started for this command and stopped after when not),
    with the schema brought up to date, so that a key made here works in `up` afterwards."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from batchcalls.adapters.store.migrate import upgrade
    from batchcalls.ops.embedded import default_data_dir, start_postgres

    server = start_postgres(default_data_dir())
    try:
        upgrade(server.url)
        yield server.url
    finally:
        server.stop()
