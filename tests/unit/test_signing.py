from __future__ import annotations

import base64
import time

import pytest
import standardwebhooks
import stripe

from batchcalls.domain.signing import (
    BATCHCALLS_SIGNATURE_HEADER,
    new_webhook_secret,
    signature_headers,
    verify_batchcalls_signature,
)

BODY = b'{"id":"evt_0123456789abcdef01234567","type":"batch.started","data":{"caf\xc3\xa9":1}}'
EVENT_ID = "evt_0123456789abcdef01234567"


def _stripe_verifies(body: bytes, header: str, secret: str) -> bool:
    try:
        return bool(stripe.WebhookSignature.verify_header(body, header, secret, 300))
    except stripe.SignatureVerificationError:
        return False


def _standard_verifies(body: bytes, headers: dict[str, str], secret: str) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(body, headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


def test_new_webhook_secret_is_whsec_and_32_random_bytes() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert new_webhook_secret() != secret


def test_headers_verify_with_stripe_and_standard_webhooks() -> None:
    secret = new_webhook_secret()
    now = int(time.time())
    headers = signature_headers([secret], EVENT_ID, BODY, now)

    assert headers["webhook-id"] == EVENT_ID
    assert headers["webhook-timestamp"] == str(now)
    assert headers[BATCHCALLS_SIGNATURE_HEADER].startswith(f"t={now},v1=")
    assert headers["webhook-signature"].startswith("v1,")
    assert _stripe_verifies(BODY, headers[BATCHCALLS_SIGNATURE_HEADER], secret)
    assert _standard_verifies(BODY, headers, secret)
    assert verify_batchcalls_signature(secret, headers[BATCHCALLS_SIGNATURE_HEADER], BODY, now)


def test_rotation_carries_one_signature_per_secret_and_each_alone_verifies() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    now = int(time.time())
    headers = signature_headers([old, new], EVENT_ID, BODY, now)

    assert headers[BATCHCALLS_SIGNATURE_HEADER].count("v1=") == 2
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert _stripe_verifies(BODY, headers[BATCHCALLS_SIGNATURE_HEADER], secret)
        assert _standard_verifies(BODY, headers, secret)
        assert verify_batchcalls_signature(secret, headers[BATCHCALLS_SIGNATURE_HEADER], BODY, now)
    stranger = new_webhook_secret()
    assert not _stripe_verifies(BODY, headers[BATCHCALLS_SIGNATURE_HEADER], stranger)
    assert not _standard_verifies(BODY, headers, stranger)


def test_tampered_body_fails_every_verifier() -> None:
    secret = new_webhook_secret()
    now = int(time.time())
    headers = signature_headers([secret], EVENT_ID, BODY, now)
    tampered = BODY.replace(b"batch.started", b"batch.completed")

    assert not _stripe_verifies(tampered, headers[BATCHCALLS_SIGNATURE_HEADER], secret)
    assert not _standard_verifies(tampered, headers, secret)
    assert not verify_batchcalls_signature(secret, headers[BATCHCALLS_SIGNATURE_HEADER], tampered, now)


def test_changed_event_id_fails_standard_webhooks() -> None:
    secret = new_webhook_secret()
    headers = signature_headers([secret], EVENT_ID, BODY, int(time.time()))
    headers["webhook-id"] = "evt_someoneelse"
    assert not _standard_verifies(BODY, headers, secret)


def test_verify_batchcalls_signature_enforces_tolerance_both_ways() -> None:
    secret = new_webhook_secret()
    header = signature_headers([secret], EVENT_ID, BODY, 1_000_000)[BATCHCALLS_SIGNATURE_HEADER]

    assert verify_batchcalls_signature(secret, header, BODY, 1_000_300)
    assert not verify_batchcalls_signature(secret, header, BODY, 1_000_301)
    assert not verify_batchcalls_signature(secret, header, BODY, 999_699)
    assert verify_batchcalls_signature(secret, header, BODY, 1_000_600, tolerance=600)


@pytest.mark.parametrize("header", ["", "t=abc,v1=00", "v1=00", "t=1000000", "garbage", "t=1000000,v1=caf\u00e9"])
def test_verify_batchcalls_signature_rejects_malformed_headers(header: str) -> None:
    assert not verify_batchcalls_signature(new_webhook_secret(), header, BODY, 1_000_000)


def test_signature_headers_refuses_no_secret_and_bad_secret() -> None:
    with pytest.raises(ValueError):
        signature_headers([], EVENT_ID, BODY, 1)
    with pytest.raises(ValueError):
        signature_headers(["whsec_not base64!"], EVENT_ID, BODY, 1)
    with pytest.raises(TypeError):
        signature_headers(new_webhook_secret(), EVENT_ID, BODY, 1)
