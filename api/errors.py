"""The one place that turns errors into JSON responses: `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from batchcalls.domain.errors import BatchcallsError, RetryLater

log = logging.getLogger("batchcalls.api")


def error_response(
    status: int, code: str, message: str, details: Any = None, retry_after: int | None = None
) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


TOO_LARGE_MESSAGE = "request body is larger than BATCHCALLS_MAX_BODY_BYTES allows"

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "invalid_request",
}


def register_errors(app: Flask) -> None:
    @app.errorhandler(BatchcallsError)
    def domain_error(exc: BatchcallsError) -> Response:
        retry_after = exc.retry_after if isinstance(exc, RetryLater) else None
        return error_response(exc.http_status, exc.code, exc.message, exc.details, retry_after)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = TOO_LARGE_MESSAGE
        response = error_response(status, _HTTP_CODES.get(status, "http_error"), message)
        # A 405 names the methods the route has (RFC 9110 requires Allow).
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
