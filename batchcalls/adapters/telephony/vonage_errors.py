"""What a failed Vonage create means for the attempt (see `batchcalls.adapters.telephony.vonage`)."""

from __future__ import annotations

import ssl

import requests
from urllib3.exceptions import ConnectTimeoutError
from vonage_http_client.errors import HttpRequestError

from batchcalls.domain.errors import ProviderError


def brief(exc: HttpRequestError) -> str:
    """The SDK's error message (status, URL, pretty-printed body) on one short line."""
    return " ".join(str(exc.message).split())[:300]


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps (requests -> urllib3 MaxRetryError -> reason -> ...)."""
    found: list[BaseException] = []
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or item in found:
            continue
        found.append(item)
        pending.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])
    return found


def _never_sent(exc: BaseException) -> bool:
    """True when the request certainly never reached Vonage: no connection was made, or TLS
    refused the server's certificate during the handshake."""
    return any(isinstance(c, ConnectTimeoutError | ssl.SSLCertVerificationError) for c in _causes(exc))


def create_error(exc: BaseException) -> ProviderError:
    """What a failed create means for the attempt: certainly no call (`definite`), throttled
    (429: wait for a new slot, do not fail), or perhaps a call (`definite=False`)."""
    if isinstance(exc, HttpRequestError):
        status = exc.response.status_code
        if status == 429:
            return ProviderError(
                "Vonage refused the create: over its calls-per-second limit (429)", definite=True, throttled=True
            )
        if 400 <= status < 500:
            # 401/403 are a configuration problem (application id, key, account): every call
            # fails the same way until it is fixed, and says so in its last_error.
            return ProviderError(f"Vonage refused the call ({status}): {brief(exc)}", definite=True)
        return ProviderError(f"Vonage answered {status} to the create; the call may exist", definite=False)
    if isinstance(exc, requests.RequestException) and _never_sent(exc):
        return ProviderError(f"could not reach Vonage: {exc}", definite=True)
    return ProviderError(f"no answer from Vonage to the create; the call may exist: {exc!r}"[:500], definite=False)
