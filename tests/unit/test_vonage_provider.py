"""The Vonage adapter without a network: keys, settings, error meanings, client configuration.
(Its requests to a fake Vonage over HTTPS are in tests/integration/test_vonage.py.)"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError
from vonage_http_client.errors import HttpRequestError, RateLimitedError, ServerError

from batchcalls.adapters.telephony.factory import make_provider
from batchcalls.adapters.telephony.vonage import (
    MACHINE_DETECTION,
    SafeCreateAdapter,
    VonageProvider,
    create_error,
    load_private_key,
    pkcs8_pem,
    webhook_url_key,
)
from batchcalls.domain.errors import ConfigurationError
from config.settings import load_settings

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(fmt: serialization.PrivateFormat, key: Any = KEY) -> str:
    return str(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode())


PKCS8 = pem(serialization.PrivateFormat.PKCS8)
PKCS1 = pem(serialization.PrivateFormat.TraditionalOpenSSL)


@pytest.mark.parametrize(
    "value",
    [
        PKCS8,
        PKCS1,
        PKCS8.strip().replace("\n", "\\n"),  # one line, as an environment variable holds it
        PKCS1.strip().replace("\n", "\\n"),
        f'"{PKCS1.strip()}"',
    ],
)
def test_keys_in_every_usual_form_load(value: str) -> None:
    loaded = load_private_key(value)
    assert pkcs8_pem(loaded) == PKCS8
    assert pkcs8_pem(loaded).startswith("-----BEGIN PRIVATE KEY-----")  # the one text form the SDK takes


def test_a_key_file_path_loads(tmp_path: Path) -> None:
    path = tmp_path / "private.key"
    path.write_text(PKCS1)
    assert pkcs8_pem(load_private_key(str(path))) == PKCS8


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/nonexistent/private.key", "neither PEM text nor a readable key file"),
        ("-----BEGIN PRIVATE KEY-----\\nnot base64\\n-----END PRIVATE KEY-----", "is not a PEM private key"),
        (pem(serialization.PrivateFormat.PKCS8, ec.generate_private_key(ec.SECP256R1())), "is not an RSA key"),
    ],
)
def test_a_bad_key_is_a_clear_configuration_error(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_private_key(value)


def settings(**env: str | None) -> Any:
    base = {
        "DATABASE_URL": "postgresql://x/y",
        "REDIS_URL": "redis://x/0",
        "BATCHCALLS_PROVIDER": "vonage",
        "VONAGE_APPLICATION_ID": "app-1",
        "VONAGE_PRIVATE_KEY": PKCS1.replace("\n", "\\n"),
        "VONAGE_FROM_NUMBER": "+447700900001",
        "PUBLIC_BASE_URL": "https://calls.example",
        "VONAGE_SIGNATURE_SECRET": "s" * 40,
    }
    return load_settings({k: v for k, v in {**base, **env}.items() if v is not None})


@pytest.mark.parametrize("provider", ["vonage", ""])  # "": vonage, from the application id and key
def test_vonage_without_a_signature_secret_refuses_to_start(provider: str) -> None:
    """Unsigned, anyone who learns a call id could end its calls or read its script: the API
    and every worker (both build their settings with `load_settings`) refuse to start."""
    with pytest.raises(ValueError, match="needs VONAGE_SIGNATURE_SECRET"):
        settings(BATCHCALLS_PROVIDER=provider, VONAGE_SIGNATURE_SECRET=None)
    with pytest.raises(ValueError, match="needs VONAGE_SIGNATURE_SECRET"):
        settings(BATCHCALLS_PROVIDER=provider, VONAGE_SIGNATURE_SECRET=None, VONAGE_ALLOW_UNSIGNED="0")


def test_unsigned_vonage_webhooks_only_when_asked_for_and_loudly(caplog: pytest.LogCaptureFixture) -> None:
    unsigned = settings(VONAGE_SIGNATURE_SECRET=None, VONAGE_ALLOW_UNSIGNED="1")
    assert unsigned.vonage_allow_unsigned and unsigned.vonage_signature_secret is None
    with caplog.at_level(logging.WARNING, logger="batchcalls.vonage"):
        provider = make_provider(unsigned, sink=None)  # type: ignore[arg-type]
    assert "accepted unsigned" in caplog.text and "never in production" in caplog.text
    # The URL tokens' key comes from the private key then, the same in every process.
    assert isinstance(provider, VonageProvider)
    assert provider.url_key == webhook_url_key(
        settings(VONAGE_SIGNATURE_SECRET=None, VONAGE_ALLOW_UNSIGNED="1", VONAGE_PRIVATE_KEY=PKCS8)
    )
    assert provider.url_key != webhook_url_key(settings())
    # The simulator needs no secret.
    assert load_settings({"DATABASE_URL": "x", "REDIS_URL": "y"}).provider == "simulator"


def test_make_provider_builds_a_checked_vonage_provider() -> None:
    provider = make_provider(settings(VONAGE_API_HOST="127.0.0.1:8443"), sink=None)  # type: ignore[arg-type]
    assert isinstance(provider, VonageProvider)
    assert provider.api_host == "127.0.0.1:8443" and pkcs8_pem(provider.private_key) == PKCS8


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"VONAGE_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\\nAAAA\\n-----END RSA PRIVATE KEY-----"},
            "VONAGE_PRIVATE_KEY",
        ),
        # With the countries set: unset, load_settings already refuses such a caller id.
        ({"VONAGE_FROM_NUMBER": "", "BATCHCALLS_ALLOWED_COUNTRIES": "GB"}, "needs VONAGE_FROM_NUMBER"),
        (
            {"VONAGE_FROM_NUMBER": "Acme", "BATCHCALLS_ALLOWED_COUNTRIES": "all"},
            "VONAGE_FROM_NUMBER must be a phone number",
        ),
        ({"VONAGE_CA_BUNDLE": "/nonexistent/ca.pem"}, "VONAGE_CA_BUNDLE is not a file"),
        ({"VONAGE_API_HOST": "https://api.nexmo.com/"}, "VONAGE_API_HOST must be a host name"),
        ({"PUBLIC_BASE_URL": "calls.example.com"}, "PUBLIC_BASE_URL must be"),
    ],
)
def test_bad_vonage_settings_fail_at_startup(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_provider(settings(**env), sink=None)  # type: ignore[arg-type]


def test_the_client_cannot_resend_a_create() -> None:
    provider = make_provider(settings(VONAGE_CA_BUNDLE=__file__), sink=None)  # type: ignore[arg-type]
    assert isinstance(provider, VonageProvider)
    client = provider.client()
    # The SDK's own loop re-sends a dropped request `pool_maxsize` times: once.
    assert client.http_client.http_client_options.pool_maxsize == 1
    adapter = client.http_client._session.get_adapter("https://api.nexmo.com/v1/calls")
    assert isinstance(adapter, SafeCreateAdapter)
    assert adapter.max_retries.read == 0 and adapter.max_retries.other == 0 and adapter.max_retries.status == 0
    assert adapter.ca_bundle == __file__
    assert provider.client() is client  # one per process
    # Tokens are signed with the key parsed once (the SDK would parse its PEM text each time),
    # and Vonage can check them with the public key.
    token = client.http_client.auth.generate_application_jwt()
    claims = jwt.decode(token, KEY.public_key(), algorithms=["RS256"])
    assert claims["application_id"] == "app-1"
    assert isinstance(client.http_client.auth._jwt_client._private_key, rsa.RSAPrivateKey)
    assert MACHINE_DETECTION in ("hangup", "continue")


def test_a_forked_process_builds_its_own_client() -> None:
    provider = make_provider(settings(), sink=None)  # type: ignore[arg-type]
    assert isinstance(provider, VonageProvider)
    parent = provider.client()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new client, not the parent's
        os.write(write, b"1" if provider.client() is not parent else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"


# --- what a failed create means ---------------------------------------------------------------


def response(status: int) -> requests.Response:
    made = requests.Response()
    made.status_code = status
    made._content = b'{"title": "x"}'
    made.url = "https://api.nexmo.com/v1/calls"
    return made


def wrapped(reason: Exception, kind: type[requests.RequestException] = requests.ConnectionError) -> Exception:
    return kind(MaxRetryError(None, "/v1/calls", reason))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "definite", "throttled"),
    [
        (RateLimitedError(response(429)), True, True),
        (HttpRequestError(response(400)), True, False),
        (HttpRequestError(response(401)), True, False),
        (HttpRequestError(response(403)), True, False),
        (ServerError(response(500)), False, False),
        (HttpRequestError(response(503)), False, False),
        # Never sent: no connection, or TLS refused the server.
        (wrapped(NewConnectionError(None, "refused")), True, False),  # type: ignore[arg-type]
        (wrapped(ssl.SSLCertVerificationError("self-signed"), requests.exceptions.SSLError), True, False),
        # Maybe sent: the connection dropped or timed out after the request went out.
        (
            requests.ConnectionError(ProtocolError("Connection aborted.", http.client.RemoteDisconnected("closed"))),
            False,
            False,
        ),
        (requests.exceptions.ReadTimeout(ReadTimeoutError(None, "/v1/calls", "read timed out")), False, False),  # type: ignore[arg-type]
        (wrapped(ssl.SSLError("bad record mac"), requests.exceptions.SSLError), False, False),
        (TypeError("CreateCallResponse() argument after ** must be a mapping"), False, False),
    ],
)
def test_each_failed_create_means_no_call_a_throttle_or_maybe_a_call(
    exc: Exception, definite: bool, throttled: bool
) -> None:
    error = create_error(exc)
    assert (error.definite, error.throttled) == (definite, throttled)
    assert "\n" not in error.message
