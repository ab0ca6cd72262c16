"""One exception tree. `api/errors.py` is the only place that maps it to HTTP."""

from __future__ import annotations

from typing import Any

Details = dict[str, list[str]]  # per field (`calls[3].phone_number`), its problems


def summary(what: str, problems: Details) -> str:
    """An error's message from its details: `what`, the first field and its first problem."""
    path, messages = next(iter(problems.items()))
    more = len(problems) - 1
    return f"{what}: {path}: {messages[0]}" + (f" (and {more} more; see details)" if more else "")


class BatchcallsError(Exception):
    """Root of every error the product raises on purpose."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(BatchcallsError):
    code = "invalid_request"
    http_status = 422


class MalformedRequest(InvalidRequest):
    http_status = 400


class InvalidPhoneNumber(InvalidRequest):
    code = "invalid_phone_number"


class DuplicatePhoneNumber(InvalidRequest):
    """A number given twice in one batch (after E.164 normalisation) while `dedupe` is on."""

    code = "duplicate_phone_number"


class DestinationNotAllowed(InvalidRequest):
    """A valid number this tenant's destination policy forbids (country or number type)."""

    code = "destination_not_allowed"


class InvalidScript(InvalidRequest):
    code = "invalid_script"


class ConcurrencyLimit(InvalidRequest):
    code = "concurrency_limit"


class IdempotencyConflict(BatchcallsError):
    code = "idempotency_conflict"
    http_status = 409


class InvalidState(BatchcallsError):
    """A command the batch's state refuses (pausing a cancelled or finished batch)."""

    code = "invalid_state"
    http_status = 409


class PayloadTooLarge(BatchcallsError):
    code = "payload_too_large"
    http_status = 413


class Unauthorized(BatchcallsError):
    code = "unauthorized"
    http_status = 401


class NotFound(BatchcallsError):
    code = "not_found"
    http_status = 404


class RetryLater(BatchcallsError):
    """Refused for now: the answer carries `Retry-After` (seconds)."""

    def __init__(self, message: str, retry_after: int, details: Any = None) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    code = "rate_limited"
    http_status = 429


class OverCapacity(RetryLater):
    code = "over_capacity"
    http_status = 503


class Unavailable(RetryLater):
    """A service the request needs (Redis) cannot be reached; nothing was done, retry later."""

    code = "unavailable"
    http_status = 503


class QuotaExceeded(RetryLater):
    """Accepting the batch would take this tenant's calls not yet final above its quota."""

    code = "quota_exceeded"
    http_status = 429


class ProviderError(BatchcallsError):
    """A provider refused or failed a request. `definite` is False when the call may exist."""

    code = "provider_error"

    def __init__(self, message: str, *, definite: bool, throttled: bool = False) -> None:
        super().__init__(message)
        self.definite = definite
        self.throttled = throttled


class ConfigurationError(BatchcallsError):
    code = "configuration_error"
