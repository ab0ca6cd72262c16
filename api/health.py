"""Unauthenticated operations routes: `/healthz` and `/metrics`."""

from __future__ import annotations

import hmac
import logging

import redis
from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api.auth import bearer_key
from batchcalls.adapters.logs import quoted
from batchcalls.adapters.metrics import FleetCollector
from batchcalls.adapters.store.db import Database
from batchcalls.domain.errors import Unauthorized
from config.settings import Settings

log = logging.getLogger("batchcalls.api")


def register_health(app: Flask, db: Database, client: redis.Redis) -> None:
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


def register_metrics(app: Flask, settings: Settings, db: Database, client: redis.Redis) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(db, client, cache_seconds=settings.metrics_cache_seconds))

    @app.get("/metrics")
    def metrics() -> Response:
        if settings.metrics_token is not None:
            token = bearer_key()
            if token is None or not hmac.compare_digest(token.encode(), settings.metrics_token.encode()):
                raise Unauthorized("send `Authorization: Bearer <BATCHCALLS_METRICS_TOKEN>`")
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
