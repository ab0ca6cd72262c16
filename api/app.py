"""The HTTP API: `create_app(settings)` builds it; gunicorn serves `api.app:create_app()`."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from api import openapi
from api.auth import authenticate
from api.batches import bp as batches_bp
from api.batches import warm_up as warm_up_batches
from api.control import bp as control_bp
from api.dashboard import register as register_dashboard
from api.errors import register_errors
from api.health import register_health, register_metrics
from api.provider_webhooks import register as register_provider_webhooks
from api.ratelimit import RequestLimits
from api.results import bp as results_bp
from api.suppressions import bp as suppressions_bp
from batchcalls.adapters import logs
from batchcalls.adapters.gates import Gates
from batchcalls.adapters.store.db import Database
from batchcalls.domain import validation
from batchcalls.domain.voices import voice_catalog
from batchcalls.engine import Engine
from config.settings import Settings, load_settings
from workers.celery_app import create_celery
from workers.queue import CeleryTaskQueue

log = logging.getLogger("batchcalls.api")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    if not logging.getLogger().handlers:
        logs.configure()
    # Before the first request, not during it: patterns compiled, modules imported.
    validation.warm_up()
    warm_up_batches(settings.max_concurrency)
    app = Flask("batchcalls")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    db = Database(settings.database_url, prepare=settings.pg_prepared_statements)
    client = redis.Redis.from_url(settings.redis_url)
    tasks = CeleryTaskQueue(create_celery(settings))
    tasks.warm_up()
    engine = Engine(settings, db, Gates(client, settings.lease_seconds), tasks)
    app.extensions["batchcalls.engine"] = engine

    if settings.trusted_proxies:
        # The client address (the failed-authentication budget's subject) from X-Forwarded-For,
        # as the nearest `trusted_proxies` proxies wrote it; without them the header is ignored.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    register_request_hooks(app, settings, db)
    register_health(app, db, client)
    register_metrics(app, settings, db, client)
    app.register_blueprint(batches_bp)
    app.register_blueprint(control_bp)
    app.register_blueprint(results_bp)
    app.register_blueprint(suppressions_bp)
    register_dashboard(app, settings, db, client, tasks.app)
    # Built once per process, at start: a broken document fails the start, not a request.
    document = openapi.build_document(
        max_concurrency=settings.max_concurrency,
        voices=voice_catalog(),
        rate_limit=settings.rate_limit,
        auth_failure_limit=settings.auth_failure_limit,
        tenant_defaults=settings.tenant_defaults,
    )
    app.extensions["batchcalls.openapi"] = lambda: document
    app.register_blueprint(openapi.bp)
    if settings.provider == "vonage":  # the simulator's events never come over HTTP
        register_provider_webhooks(app, settings)
    register_errors(app)
    return app


def register_request_hooks(app: Flask, settings: Settings, db: Database) -> None:
    budgets = RequestLimits(
        settings.redis_url, tenant_limit=settings.rate_limit, auth_failure_limit=settings.auth_failure_limit
    )
    forwarded_warned = False

    @app.before_request
    def require_key() -> None:
        """/v1 only: provider webhooks, health and metrics are neither authenticated nor counted,
        nor is the published contract (public documentation, nothing of any tenant's)."""
        nonlocal forwarded_warned
        if not settings.trusted_proxies and not forwarded_warned and "X-Forwarded-For" in request.headers:
            # Behind a proxy that is not trusted every client has the proxy's address, so one
            # client's failed keys spend every client's budget. Once per process: not a log flood.
            forwarded_warned = True
            log.warning(
                "a request carries X-Forwarded-For but BATCHCALLS_TRUSTED_PROXIES is 0: every client"
                " behind a proxy shares the proxy's failed-authentication budget; set"
                " BATCHCALLS_TRUSTED_PROXIES to the number of proxies in front of the API"
            )
        if request.path.startswith("/v1/") and request.path not in openapi.PUBLIC_PATHS:
            authenticate(db, budgets)

    @app.after_request
    def advertise_budget(response: Response) -> Response:
        standing = g.get("rate_limit")
        if standing is not None:
            standing.apply(response)
        return response
