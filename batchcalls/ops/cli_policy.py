"""`batchcalls keys policy`: a tenant's quotas, destinations and ceilings."""

from __future__ import annotations

import json

import click

from batchcalls.ops.cli_admin import _database_url, keys


@keys.command("policy")
@click.option("--tenant", required=True, help="Tenant name.")
@click.option(
    "--max-queued-calls",
    metavar="N|default",
    help="Most calls not yet final across the tenant's batches (429 quota_exceeded above).",
)
@click.option("--max-calls-per-batch", metavar="N|default", help="Most calls in one batch (422 above).")
@click.option(
    "--allowed-countries",
    metavar="CC,...|all|default",
    help="ISO 3166 country codes the tenant may call, e.g. US,GB; `all`: every country.",
)
@click.option(
    "--blocked-number-types",
    metavar="TYPE,...|none|default",
    help="Number types the tenant may not call, e.g. premium_rate,non_geographic; `none`: no type.",
)
@click.option(
    "--max-calls-per-second",
    metavar="N|default",
    help="Ceiling on the tenant's share of the provider's calls-per-second limit (default: none).",
)
@click.option(
    "--max-concurrent-calls",
    metavar="N|default",
    help="Ceiling on the tenant's calls holding a slot across its batches (default: none).",
)
@click.option(
    "--calling-window",
    metavar="JSON|default",
    help='Window of the tenant\'s batches that give none, e.g. \'{"start": "09:00", "end": "20:00"}\' (default: none).',
)
@click.option(
    "--max-dials-per-number",
    metavar="N|default",
    help="Most dials to one number in any rolling 24 hours, across the tenant's batches (default: none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_policy(
    tenant: str,
    max_queued_calls: str | None,
    max_calls_per_batch: str | None,
    allowed_countries: str | None,
    blocked_number_types: str | None,
    max_calls_per_second: str | None,
    max_concurrent_calls: str | None,
    calling_window: str | None,
    max_dials_per_number: str | None,
    as_json: bool,
) -> None:
    """Show a tenant's quotas and destination policy, after setting those given.

    Each option takes a value of the tenant's own, or `default` for the value from the settings
    (BATCHCALLS_TENANT_MAX_QUEUED_CALLS, BATCHCALLS_MAX_CALLS_PER_BATCH,
    BATCHCALLS_ALLOWED_COUNTRIES, BATCHCALLS_BLOCKED_NUMBER_TYPES; no ceiling for the last two).
    The defaults shown are this command's settings (its environment); the API uses its own. A
    new ceiling holds for the tenant's running batches from the reconciler's next sweep."""
    from batchcalls.adapters.store.db import Database
    from batchcalls.adapters.store.tenants import set_tenant_policy
    from config.settings import load_settings

    given = {
        "max_queued_calls": max_queued_calls,
        "max_calls_per_batch": max_calls_per_batch,
        "allowed_countries": allowed_countries,
        "blocked_number_types": blocked_number_types,
        "max_calls_per_second": max_calls_per_second,
        "max_concurrent_calls": max_concurrent_calls,
        "calling_window": calling_window,
        "max_dials_per_number": max_dials_per_number,
    }
    changes = {name: _policy_value(name, raw) for name, raw in given.items() if raw is not None}
    defaults = load_settings().tenant_defaults
    with _database_url() as url:
        own = set_tenant_policy(Database(url), tenant, changes)
    if own is None:
        raise click.ClickException(f"no tenant {tenant!r}: create it with `batchcalls keys create --tenant {tenant}`")
    policy = own.over(defaults).as_dict()
    overridden = own.overridden()
    if as_json:
        click.echo(
            json.dumps({"tenant": tenant, "policy": policy, "overrides": {name: policy[name] for name in overridden}})
        )
        return
    click.echo(f"tenant: {tenant}")
    for name, value in policy.items():
        if value is None:
            value = "none"
        elif name == "calling_window":
            value = json.dumps(value)
        if isinstance(value, list):
            value = ", ".join(value) or ("all" if name == "allowed_countries" else "none")
        click.echo(f"{name}: {value} ({'own' if name in overridden else 'default'})")


def _policy_value(name: str, raw: str) -> object:
    """An option of `keys policy` as the value to store (None: back to the default)."""
    from batchcalls.domain.destinations import parse_countries, parse_number_types

    option = "--" + name.replace("_", "-")
    text = raw.strip()
    if text.lower() == "default":
        return None
    try:
        if not text:
            raise ValueError("give a value, or `default`")
        if name == "max_calls_per_second":
            rate = float(text)
            if not 0 < rate <= 10_000:
                raise ValueError(f"must be a number above 0 and at most 10000, or `default`; not {raw!r}")
            return rate
        if name in ("max_queued_calls", "max_calls_per_batch", "max_concurrent_calls", "max_dials_per_number"):
            if not text.isdigit() or not 1 <= int(text) < 2**31:
                raise ValueError(f"must be a whole number from 1 to {2**31 - 1}, or `default`; not {raw!r}")
            return int(text)
        if name == "calling_window":
            return _window(text)
        if name == "allowed_countries":
            return () if text.lower() == "all" else parse_countries(text.split(","))
        return () if text.lower() == "none" else parse_number_types(text.split(","))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=option) from e


def _window(text: str) -> object:
    from batchcalls.domain.window_spec import calling_window_problems, parse_calling_window

    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"must be JSON, or `default`: {e}") from e
    problems = calling_window_problems(value)
    if problems:
        raise ValueError("; ".join(f"{path or 'calling_window'}: {', '.join(m)}" for path, m in problems.items()))
    return parse_calling_window(value)
