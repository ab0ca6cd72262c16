"""The HTTP API: `create_app(settings)` builds it; gunicorn serves `api.app:create_app()`."""

from __future__ import annotations

import hmac
import logging

import redis
from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.middleware.proxy_fix import ProxyFix

from api import openapi
from api.auth import authenticate, bearer_key
from api.batches import bp as batches_bp
from api.batches import warm_up as warm_up_batches
from api.errors import register_errors
from api.provider_webhooks import register as register_provider_webhooks
from api.ratelimit import RequestLimits
from batchcalls import logs, validation
from batchcalls.engine import Engine
from batchcalls.errors import Unauthorized
from batchcalls.gates import Gates
from batchcalls.logs import quoted
from batchcalls.metrics import FleetCollector
from batchcalls.store.db import Database
from batchcalls.voices import voice_catalog
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

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        # Only ok/unavailable: an error's text (host names, addresses) is for the log, not for
        # whoever asks.
        checks = {}
        try:
            with db.transaction() as cur:
                cur.execute("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a health check reports every failure
            log.warning("health check failed check=database error=%s", quoted(exc))
            checks["database"] = "unavailable"
        try:
            client.ping()
            checks["redis"] = checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001
            log.warning("health check failed check=redis error=%s", quoted(exc))
            checks["redis"] = checks["broker"] = "unavailable"
        healthy = all(v == "ok" for v in checks.values())
        return jsonify({"status": "ok" if healthy else "unavailable", "checks": checks}), 200 if healthy else 503

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(db, client, cache_seconds=settings.metrics_cache_seconds))

    @app.get("/metrics")
    def metrics() -> Response:
        if settings.metrics_token is not None:
            token = bearer_key()
            if token is None or not hmac.compare_digest(token.encode(), settings.metrics_token.encode()):
                raise Unauthorized("send `Authorization: Bearer <BATCHCALLS_METRICS_TOKEN>`")
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.register_blueprint(batches_bp)
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
