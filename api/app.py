"""The HTTP API: `create_app(settings)` builds it; gunicorn serves `api.app:create_app()`."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, g, jsonify, request
from flask_limiter import Limiter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api.auth import authenticate, bearer_key
from api.batches import bp as batches_bp
from api.batches import warm_up as warm_up_batches
from api.errors import register_errors
from api.provider_webhooks import register as register_provider_webhooks
from batchcalls import logs, validation
from batchcalls.engine import Engine
from batchcalls.gates import Gates
from batchcalls.metrics import FleetCollector
from batchcalls.store.db import Database
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

    # One budget per API key across every route (application_limits): default_limits would give
    # each route its own budget, multiplying the documented limit by the number of routes.
    limiter = Limiter(
        key_func=lambda: bearer_key() or request.remote_addr or "anonymous",
        app=app,
        application_limits=[settings.rate_limit],
        storage_uri=settings.redis_url,
        strategy="moving-window",
        headers_enabled=True,
        # With Redis down, serve requests unlimited rather than fail them all.
        swallow_errors=True,
    )

    @limiter.request_filter
    def only_the_api() -> bool:
        """The per-key budget is for /v1; provider webhooks, health and metrics are not counted."""
        return not request.path.startswith("/v1/")

    @app.before_request
    def require_key() -> None:
        if request.path.startswith("/v1/"):
            authenticate(db)

    @app.get("/healthz")
    @limiter.exempt
    def healthz() -> tuple[Response, int]:
        checks = {}
        try:
            with db.transaction() as cur:
                cur.execute("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a health check reports every failure
            checks["database"] = f"error: {exc}"[:200]
        try:
            client.ping()
            checks["redis"] = "ok"
            checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = checks["broker"] = f"error: {exc}"[:200]
        healthy = all(v == "ok" for v in checks.values())
        return jsonify({"status": "ok" if healthy else "unavailable", "checks": checks}), 200 if healthy else 503

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(db, client))

    @app.get("/metrics")
    @limiter.exempt
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.register_blueprint(batches_bp)
    if settings.provider == "vonage":  # the simulator's events never come over HTTP
        register_provider_webhooks(app, settings)
    register_errors(app)
    _ = g
    return app
