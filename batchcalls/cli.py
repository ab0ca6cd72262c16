"""The `batchcalls` command."""

from __future__ import annotations

import json
import os
import sys

import click

from config.settings import load_settings


@click.group()
def main() -> None:
    """Batchcalls: place AI voice calls in bulk."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations not yet applied."""
    from batchcalls.store.migrate import upgrade

    applied = upgrade(_require("DATABASE_URL"))
    click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name; created if new.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_create(tenant: str, as_json: bool) -> None:
    """Create an API key (and the tenant, if new)."""
    from batchcalls.store.db import Database
    from batchcalls.store.tenants import create_key

    settings = load_settings()
    tenant_row, api_key = create_key(Database(settings.database_url or _require("DATABASE_URL")), tenant)
    result = {"tenant": tenant_row.name, "api_key": api_key, "webhook_secret": tenant_row.webhook_secrets[0]}
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key}: {value}")


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        click.echo(f"{name} is not set", err=True)
        sys.exit(2)
    return value


if __name__ == "__main__":
    main()
