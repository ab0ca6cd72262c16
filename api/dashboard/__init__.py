"""The operator's dashboard: server-rendered pages under /dashboard, signed in with an API key.

`register(app, settings, db, client, celery)` adds the blueprint and the session machinery. Each
page shows only the signed-in key's tenant's data: another tenant's batch is a 404 everywhere,
as it is in the API. Actions call the engine's use cases, as the /v1 routes do.
"""

from __future__ import annotations

import redis
from celery import Celery
from flask import Flask

from api.dashboard import batch_pages, call_pages, fleet  # noqa: F401  (they add their routes to `bp`)
from api.dashboard.access import LIFETIME, DashboardSessions, SecretSource
from api.dashboard.blueprint import Context, bp
from api.dashboard.fleet_reads import FleetView
from api.ratelimit import RequestLimits
from batchcalls.adapters.store.db import Database
from config.settings import Settings


def register(app: Flask, settings: Settings, db: Database, client: redis.Redis, celery: Celery) -> None:
    app.session_interface = DashboardSessions(SecretSource(settings.dashboard_secret, client))
    app.config["PERMANENT_SESSION_LIFETIME"] = LIFETIME
    budgets = RequestLimits(
        settings.redis_url, tenant_limit=settings.rate_limit, auth_failure_limit=settings.auth_failure_limit
    )
    app.extensions["batchcalls.dashboard"] = Context(settings, db, budgets, FleetView(settings, db, client, celery))
    app.register_blueprint(bp)
