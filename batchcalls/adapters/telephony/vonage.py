"""The Vonage Voice API adapter, on the official SDK (`vonage` v4). Vonage's statuses and the
SDK's exceptions stop here: the engine sees `create_call`/`poll`/`hangup` and `ProviderError`.

What it has to get right:

- **At most one call per attempt.** The SDK re-sends a request whose connection dropped
  (`RemoteDisconnected`) up to `pool_maxsize` times (10 by default), and mounts a urllib3
  `Retry(total=3)`: for a create that is a second phone call. Here the SDK's loop runs once
  (`pool_maxsize=1`) and our own transport adapter lets urllib3 retry only connection errors,
  which happen before a byte of the request is sent. A create that may have reached Vonage but
  got no answer (a dropped connection, a read timeout, a 5xx) raises `ProviderError(definite=
  False)`: the attempt stays `dialing`, and its events (whose URL carries our ids) or the
  reconciler resolve it; it is never dialed again.
- **Where it connects.** The SDK builds `https://{api_host}{path}`; `VONAGE_API_HOST` sets the
  host (and port). `VONAGE_CA_BUNDLE` is enforced by the adapter on every request, because
  requests lets `REQUESTS_CA_BUNDLE` from the environment override a session's `verify`.
- **One client per worker process**, built after fork (when the pool process starts, see
  `warm`, or on first use; a pid check), never shared across a fork.
- **A bad key fails at startup**: `make_vonage_provider` reads the key (PEM text, PKCS#8 or
  PKCS#1, with literal `\\n` from environment variables, or a file path), signs a token with
  it, and raises `ConfigurationError` if any of that fails. The key is parsed once; each create
  signs its token with the parsed key (the SDK would parse the PEM text again every time).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError
from vonage import Auth, HttpClientOptions, Vonage
from vonage_http_client.errors import HttpRequestError, NotFoundError
from vonage_utils.errors import VonageError
from vonage_voice.models import (
    AdvancedMachineDetection,
    CreateCallRequest,
    Phone,
    ToPhone,
)

from batchcalls.adapters.logs import quoted
from batchcalls.adapters.telephony import ncco
from batchcalls.adapters.telephony.base import DialRequest, LiveAttempt
from batchcalls.adapters.telephony.vonage_errors import brief, create_error
from batchcalls.adapters.telephony.vonage_keys import load_private_key, pkcs8_pem, webhook_url_key
from batchcalls.adapters.telephony.vonage_sdk import SafeCreateAdapter, digits, sdk_action
from batchcalls.adapters.telephony.vonage_webhooks import event_url, input_url, parse_timestamp, translate_status
from batchcalls.domain.errors import ConfigurationError, ProviderError
from batchcalls.domain.models import ProviderEvent
from batchcalls.domain.voices import voice_catalog
from config.settings import Settings

log = logging.getLogger("batchcalls.vonage")

__all__ = [
    "MACHINE_DETECTION",
    "SafeCreateAdapter",
    "VonageProvider",
    "create_error",
    "load_private_key",
    "make_vonage_provider",
    "pkcs8_pem",
    "webhook_url_key",
]

# Seconds to wait for Vonage to answer one request. A create that times out may exist.
REQUEST_TIMEOUT_SECONDS = 10
# On a machine, Vonage hangs up and reports `machine` (the attempt's outcome), unless the call
# has a voicemail message to leave (see `ncco.machine_detection`); `retry_on: ["machine"]` calls back later.
MACHINE_DETECTION = ncco.MACHINE_DETECTION
# A call id no call has: `warm` asks for it to open a connection.
WARM_UP_CALL = "00000000-0000-4000-8000-000000000000"
# VONAGE_API_HOST: a host name or address and an optional port (the SDK adds https:// and the path).
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")
# Hangup answers meaning the call is already over.
_ALREADY_OVER = frozenset({400, 404, 409, 410})


def _auth(application_id: str, key: rsa.RSAPrivateKey) -> Auth:
    auth = Auth(application_id=application_id, private_key=pkcs8_pem(key))
    # The SDK hands PyJWT the PEM text, which parses it again for every token: tens of ms of CPU
    # per create (over 100 on a busy host), varying from create to create, which bunches creates
    # that were spaced for the calls-per-second limit. Sign with the key parsed once instead.
    auth._jwt_client._private_key = key
    return auth


@dataclass
class VonageProvider:
    """Places, checks and ends calls through the Vonage Voice API."""

    application_id: str
    private_key: rsa.RSAPrivateKey  # parsed once, when the provider is made
    from_number: str
    public_base_url: str
    url_key: bytes = field(repr=False)  # see `webhook_url_key`
    api_host: str = "api.nexmo.com"
    ca_bundle: str | None = None
    voices: Mapping[str, Mapping[str, Any]] = field(default_factory=voice_catalog)
    name: str = "vonage"
    _client: Vonage | None = field(default=None, init=False, repr=False)
    _pid: int | None = field(default=None, init=False, repr=False)

    # -- the SDK client, one per process --------------------------------------------------

    def client(self) -> Vonage:
        """This process's SDK client, built on first use (after a fork: never inherited)."""
        if self._client is None or self._pid != os.getpid():
            options = HttpClientOptions(
                api_host=self.api_host,
                timeout=REQUEST_TIMEOUT_SECONDS,
                # The SDK re-sends a request whose connection dropped `pool_maxsize` times:
                # once here. Pool size 1 suits a prefork child, which sends one request at a time.
                pool_connections=1,
                pool_maxsize=1,
                max_retries=0,
            )
            client = Vonage(_auth(self.application_id, self.private_key), options)
            # The SDK keeps its requests session private and offers no transport options.
            client.http_client._session.mount("https://", SafeCreateAdapter(self.ca_bundle))
            self._client, self._pid = client, os.getpid()
        return self._client

    def warm(self) -> None:
        """Build this process's client and open its connection to Vonage now, not on the first
        create: a cold first create (TLS handshake) reaches Vonage later than the creates spaced
        with it, bunching them into one second. Asks for a call that does not exist (404), which
        also shows early whether Vonage accepts our credentials."""
        try:
            self.client().voice.get_call(WARM_UP_CALL)
        except NotFoundError:
            return
        except HttpRequestError as exc:
            log.error("Vonage refused the warm-up request error=%s", quoted(brief(exc)))
        except (VonageError, requests.RequestException, ValidationError) as exc:
            log.warning("could not reach Vonage to warm up error=%s", quoted(exc))

    # -- Provider -------------------------------------------------------------------------

    def create_call(self, request: DialRequest) -> str:
        voice = self.voices.get(request.voice_id) if request.voice_id else None
        if request.voice_id and voice is None:
            log.warning(
                "voice no longer in the catalog, Vonage's default voice used call_id=%s attempt=%d voice_id=%s",
                request.call_id,
                request.attempt,
                quoted(request.voice_id),
            )
        actions = ncco.render(
            request.script,
            voice,
            from_number=self.from_number,
            input_url=partial(input_url, self.public_base_url, request.call_id, request.attempt, key=self.url_key),
        )
        detection = ncco.machine_detection(request.voicemail)
        if "advanced_machine_detection" in detection:
            detection["advanced_machine_detection"] = AdvancedMachineDetection(
                **detection["advanced_machine_detection"]
            )
        try:
            params = CreateCallRequest(
                to=[ToPhone(number=digits(request.phone_number))],
                from_=Phone(number=digits(self.from_number)),
                ncco=[sdk_action(action) for action in actions],
                event_url=[event_url(self.public_base_url, request.call_id, request.attempt, key=self.url_key)],
                event_method="POST",
                **detection,
            )
        except (ValidationError, VonageError, ValueError) as exc:
            raise ProviderError(f"could not build the Vonage request: {exc}"[:500], definite=True) from exc
        try:
            response = self.client().voice.create_call(params)
        except (VonageError, requests.RequestException, ValidationError, TypeError) as exc:
            # ValidationError/TypeError: Vonage answered 2xx with a body the SDK cannot read;
            # the call exists but we do not know its id, so the attempt stays `dialing`.
            raise create_error(exc) from exc
        provider_call_id: str = response.uuid
        return provider_call_id

    def poll(self, attempt: LiveAttempt) -> ProviderEvent | None:
        """Vonage's view of an attempt whose events stopped (GET /v1/calls/{uuid})."""
        if attempt.provider_call_id is None:
            return None  # the create never answered: only the call's own events can tell
        try:
            info = self.client().voice.get_call(attempt.provider_call_id)
        except NotFoundError:
            return None
        except (VonageError, requests.RequestException, ValidationError) as exc:
            log.warning(
                "could not poll Vonage call_id=%s attempt=%d provider_call_id=%s error=%s",
                attempt.call_id,
                attempt.attempt,
                attempt.provider_call_id,
                quoted(exc),
            )
            return None
        at = parse_timestamp(info.end_time) or time.time()
        return translate_status(info.status, attempt.call_id, attempt.attempt, at, info.uuid)

    def hangup(self, call_id: str, attempt: int, provider_call_id: str) -> None:
        """End a live call (`PUT /v1/calls/{uuid}`); a call that is already over is left alone.
        Its end arrives as its webhook."""
        try:
            self.client().voice.hangup(provider_call_id)
        except HttpRequestError as exc:
            if exc.response.status_code in _ALREADY_OVER:
                log.info(
                    "hangup not needed, the call is already over provider_call_id=%s status=%d",
                    provider_call_id,
                    exc.response.status_code,
                )
                return
            raise ProviderError(
                f"Vonage refused the hangup of {provider_call_id}: {brief(exc)}", definite=False
            ) from exc
        except (VonageError, requests.RequestException) as exc:
            raise ProviderError(f"could not hang up {provider_call_id}: {exc}"[:500], definite=False) from exc

    def leave_voicemail(self, provider_call_id: str, text: str, voice_id: str | None) -> bool:
        """Transfer the call to an NCCO that speaks `text` (`PUT /v1/calls/{uuid}`, action
        `transfer`): Vonage's answer to an event webhook is not read, so this is how a call whose
        machine beeped gets its message. False when the call is already over."""
        voice = self.voices.get(voice_id) if voice_id else None
        actions = [sdk_action(action) for action in ncco.voicemail_ncco(text, voice)]
        try:
            self.client().voice.transfer_call_ncco(provider_call_id, actions)
        except HttpRequestError as exc:
            if exc.response.status_code in _ALREADY_OVER:
                log.info("voicemail not left, the call is over provider_call_id=%s", provider_call_id)
                return False
            raise ProviderError(
                f"Vonage refused the voicemail transfer of {provider_call_id}: {brief(exc)}", definite=True
            ) from exc
        except (VonageError, requests.RequestException, ValidationError) as exc:
            raise ProviderError(
                f"could not leave the voicemail on {provider_call_id}: {exc}"[:500], definite=False
            ) from exc
        return True


def make_vonage_provider(settings: Settings) -> VonageProvider:
    """The Vonage provider for `settings`, checked now: missing settings, an unreadable key or
    CA bundle, or a key the SDK cannot sign with raise `ConfigurationError`."""
    required = {
        "VONAGE_APPLICATION_ID": settings.vonage_application_id,
        "VONAGE_PRIVATE_KEY": settings.vonage_private_key,
        "VONAGE_FROM_NUMBER": settings.vonage_from_number,
    }
    missing = [name for name, value in required.items() if not value]
    if missing:
        raise ConfigurationError(f"BATCHCALLS_PROVIDER=vonage needs {', '.join(missing)}")
    assert settings.vonage_application_id and settings.vonage_private_key and settings.vonage_from_number
    key = load_private_key(settings.vonage_private_key)
    from_number = digits(settings.vonage_from_number)
    if not from_number.isdigit() or not 7 <= len(from_number) <= 15 or from_number[0] == "0":
        raise ConfigurationError("VONAGE_FROM_NUMBER must be a phone number in E.164 form, like +447700900000")
    if not _HOST.fullmatch(settings.vonage_api_host):
        raise ConfigurationError(
            f"VONAGE_API_HOST must be a host name with an optional port: {settings.vonage_api_host!r}"
        )
    if not settings.public_base_url.startswith(("https://", "http://")):
        raise ConfigurationError("PUBLIC_BASE_URL must be the http(s) URL where Vonage reaches the API")
    if settings.vonage_ca_bundle and not Path(settings.vonage_ca_bundle).is_file():
        raise ConfigurationError(f"VONAGE_CA_BUNDLE is not a file: {settings.vonage_ca_bundle}")
    try:
        _auth(settings.vonage_application_id, key).generate_application_jwt()
    except (VonageError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"the Vonage SDK cannot sign with VONAGE_PRIVATE_KEY: {exc}") from exc
    if not settings.vonage_signature_secret:
        log.warning(
            "VONAGE_SIGNATURE_SECRET is not set and VONAGE_ALLOW_UNSIGNED is: Vonage webhooks are"
            " accepted unsigned; for development only, never in production"
        )
    return VonageProvider(
        application_id=settings.vonage_application_id,
        private_key=key,
        from_number=settings.vonage_from_number,
        public_base_url=settings.public_base_url,
        url_key=webhook_url_key(settings),
        api_host=settings.vonage_api_host,
        ca_bundle=settings.vonage_ca_bundle,
    )
